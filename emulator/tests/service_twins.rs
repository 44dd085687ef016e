//! Twins over the service API (real HTTPS): PATCH merge with null deletes, PUT replace,
//! If-Match with quotes, versions and `$metadata`, limits (400004, twin unchanged), module twins,
//! and what the device side sees of it.

mod support;

use ironhub_emulator::Identity;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{start, Api};

#[tokio::test]
async fn patch_merges_deletes_and_versions() {
    let emu = start().await;
    let api = Api::new(&emu);
    api.put("/devices/t1", json!({})).await;

    let fresh = api.get("/twins/t1").await;
    assert_eq!(fresh.status, StatusCode::OK);
    assert_eq!(fresh.body["deviceId"], "t1");
    assert_eq!(fresh.body["properties"]["desired"]["$version"], 1);
    assert_eq!(fresh.body["authenticationType"], "sas");
    let v0 = fresh.body["version"].as_u64().unwrap();

    let patched = api
        .patch("/twins/t1", json!({"tags": {"site": {"floor": 2}}, "properties": {"desired": {"fan": {"speed": 3, "mode": "auto"}, "led": true}}}))
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    let desired = &patched.body["properties"]["desired"];
    assert_eq!(desired["$version"], 2);
    assert_eq!(desired["fan"], json!({"speed": 3, "mode": "auto"}));
    assert_eq!(patched.body["tags"], json!({"site": {"floor": 2}}));
    assert_eq!(patched.body["version"].as_u64().unwrap(), v0 + 1);
    let meta = &desired["$metadata"];
    assert!(meta["$lastUpdated"].as_str().unwrap().ends_with('Z'));
    assert_eq!(meta["$lastUpdatedVersion"], 2);
    assert_eq!(meta["fan"]["speed"]["$lastUpdatedVersion"], 2);
    assert!(meta["fan"]["$lastUpdated"].is_string());
    assert!(patched.body["properties"]["reported"]["$metadata"]["$lastUpdated"].is_string());

    let etag = patched.body["etag"].as_str().unwrap().to_owned();
    let stale = api.call(Method::PATCH, "/twins/t1", Some(json!({"tags": {"x": 1}})), &[("If-Match", "\"AAAAAAAAAAE=\"")]).await;
    assert_eq!((stale.status, stale.error_code()), (StatusCode::PRECONDITION_FAILED, 412001));

    let quoted = format!("\"{etag}\"");
    let deleted = api
        .call(Method::PATCH, "/twins/t1", Some(json!({"properties": {"desired": {"fan": {"mode": null}, "led": null}}})), &[("If-Match", &quoted)])
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.body["properties"]["desired"]["fan"], json!({"speed": 3}));
    assert!(deleted.body["properties"]["desired"].get("led").is_none());
    assert!(deleted.body["properties"]["desired"]["$metadata"].get("led").is_none());
    assert_eq!(deleted.body["properties"]["desired"]["$version"], 3);
    assert_ne!(deleted.body["etag"], json!(etag));

    // Tags only: desired $version stays, twin version moves.
    let tags_only = api.patch("/twins/t1", json!({"tags": {"site": null}})).await;
    assert_eq!(tags_only.body["properties"]["desired"]["$version"], 3);
    assert_eq!(tags_only.body["tags"], json!({}));
    assert_eq!(tags_only.body["version"].as_u64().unwrap(), v0 + 3);

    // What a device's twin GET returns.
    let device_view = emu.hub().twin_properties(&Identity::device("t1")).unwrap();
    assert_eq!(device_view, json!({"desired": {"fan": {"speed": 3}, "$version": 3}, "reported": {"$version": 1}}));

    let wildcard = api.call(Method::PATCH, "/twins/t1", Some(json!({"tags": {"a": 1}})), &[("If-Match", "\"*\"")]).await;
    assert_eq!(wildcard.status, StatusCode::OK);
}

#[tokio::test]
async fn put_replaces_and_ignores_reported() {
    let emu = start().await;
    let api = Api::new(&emu);
    api.put("/devices/t2", json!({})).await;
    emu.hub().patch_reported(&Identity::device("t2"), &json!({"fw": "1.0"})).unwrap();
    api.patch("/twins/t2", json!({"tags": {"old": 1}, "properties": {"desired": {"a": 1, "b": 2}}})).await;
    let replaced = api
        .call(
            Method::PUT,
            "/twins/t2",
            Some(json!({"tags": {"new": 1}, "properties": {"desired": {"c": 3}, "reported": {"fw": "hacked"}}})),
            &[],
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK);
    assert_eq!(replaced.body["tags"], json!({"new": 1}));
    let desired = &replaced.body["properties"]["desired"];
    assert_eq!((desired["c"].clone(), desired.get("a")), (json!(3), None));
    assert_eq!(desired["$version"], 3);
    assert_eq!(replaced.body["properties"]["reported"]["fw"], "1.0");
    assert_eq!(replaced.body["properties"]["reported"]["$version"], 2);
}

#[tokio::test]
async fn limits_are_400004_and_leave_the_twin_unchanged() {
    let emu = start().await;
    let api = Api::new(&emu);
    api.put("/devices/t3", json!({})).await;
    api.patch("/twins/t3", json!({"tags": {"keep": 1}, "properties": {"desired": {"keep": 1}}})).await;
    let before = api.get("/twins/t3").await.body;

    let mut deep = json!(1);
    for _ in 0..11 {
        deep = json!({ "k": deep });
    }
    let big_desired: Value = (0..9).map(|i| (format!("k{i}"), json!("x".repeat(4000)))).collect::<serde_json::Map<_, _>>().into();
    let big_tags: Value = (0..3).map(|i| (format!("k{i}"), json!("x".repeat(4000)))).collect::<serde_json::Map<_, _>>().into();
    let bodies = [
        json!({"properties": {"desired": deep}}),
        json!({"properties": {"desired": {"s": "x".repeat(4097)}}}),
        json!({"properties": {"desired": { "k".repeat(1025): 1 }}}),
        json!({"properties": {"desired": {"a.b": 1}}}),
        json!({"properties": {"desired": {"a$b": 1}}}),
        json!({"properties": {"desired": {"a b": 1}}}),
        json!({"properties": {"desired": big_desired}}),
        json!({"tags": big_tags}),
        json!({"tags": {"ok": 1}, "properties": {"desired": {"bad.key": 1}}}),
        json!({"tags": "not an object"}),
    ];
    for body in bodies {
        for method in [Method::PATCH, Method::PUT] {
            let a = api.call(method.clone(), "/twins/t3", Some(body.clone()), &[]).await;
            assert_eq!((a.status, a.error_code()), (StatusCode::BAD_REQUEST, 400004), "{method} {}", &body.to_string()[..60.min(body.to_string().len())]);
            assert_eq!(a.error_code_name.as_deref(), Some("ArgumentInvalid"));
        }
    }
    assert_eq!(api.get("/twins/t3").await.body, before);

    let reported_err = emu.hub().patch_reported(&Identity::device("t3"), &json!({"a.b": 1})).unwrap_err();
    assert_eq!((reported_err.status, reported_err.code), (400, 400004));
    assert_eq!(api.get("/twins/t3").await.body, before);
}

#[tokio::test]
async fn module_twins_and_missing_identities() {
    let emu = start().await;
    let api = Api::new(&emu);
    emu.hub().create_device("edge").unwrap();
    emu.hub().create_module("edge", "filter").unwrap();
    let twin = api.patch("/twins/edge/modules/filter", json!({"properties": {"desired": {"threshold": 5}}})).await;
    assert_eq!(twin.status, StatusCode::OK);
    assert_eq!((twin.body["deviceId"].clone(), twin.body["moduleId"].clone()), (json!("edge"), json!("filter")));
    assert_eq!(twin.body["properties"]["desired"]["threshold"], 5);
    let got = api.get("/twins/edge/modules/filter").await;
    assert_eq!(got.body["properties"]["desired"]["$version"], 2);
    assert_eq!(api.get("/twins/edge").await.body["properties"]["desired"]["$version"], 1, "the device twin is separate");
    let put = api.put("/twins/edge/modules/filter", json!({"properties": {"desired": {}}})).await;
    assert_eq!(put.body["properties"]["desired"]["$version"], 3);

    let no_dev = api.get("/twins/ghost").await;
    assert_eq!((no_dev.status, no_dev.error_code()), (StatusCode::NOT_FOUND, 404001));
    let no_mod = api.patch("/twins/edge/modules/ghost", json!({"tags": {}})).await;
    assert_eq!((no_mod.status, no_mod.error_code()), (StatusCode::NOT_FOUND, 404010));
    let bad_json = api.call(Method::PATCH, "/twins/edge", None, &[]).await;
    assert_eq!(bad_json.status, StatusCode::OK, "an empty body changes nothing");
}

#[tokio::test]
async fn device_twins_carry_device_scope_and_parent_scopes() {
    let emu = start().await;
    let api = Api::new(&emu);
    let edge = api.put("/devices/gw", json!({"capabilities": {"iotEdge": true}})).await.body;
    emu.hub().create_device("leaf").unwrap();
    let twin = api.get("/twins/gw").await.body;
    assert_eq!(twin["deviceScope"], edge["deviceScope"]);
    assert!(twin["deviceScope"].as_str().unwrap().starts_with("ms-azure-iot-edge://gw-"), "{twin}");
    assert_eq!(twin["parentScopes"], json!([]));
    let leaf = api.get("/twins/leaf").await.body;
    assert!(leaf.get("deviceScope").is_none(), "{leaf}");
    assert_eq!(leaf["parentScopes"], json!([]));
}
