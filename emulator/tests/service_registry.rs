//! The registry half of the service API over real HTTPS: device and module CRUD with exact
//! status codes and If-Match rules, bulk, query, statistics, auth and the error format.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{start, Api};

#[tokio::test]
async fn device_crud_codes_and_if_match() {
    let emu = start().await;
    let api = Api::new(&emu);

    let created = api.put("/devices/dev1", json!({"deviceId": "dev1", "status": "enabled"})).await;
    assert_eq!(created.status, StatusCode::OK);
    let etag = created.body["etag"].as_str().unwrap().to_owned();
    assert_eq!(created.etag.as_deref(), Some(format!("\"{etag}\"").as_str()));
    assert_eq!(created.body["authentication"]["type"], "sas");
    let primary = created.body["authentication"]["symmetricKey"]["primaryKey"].as_str().unwrap().to_owned();
    assert_eq!(primary.len(), 44, "32-byte base64 key");
    assert_eq!(created.body["connectionState"], "Disconnected");

    let again = api.put("/devices/dev1", json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_code(), 409001);
    assert_eq!(again.error_code_name.as_deref(), Some("DeviceAlreadyExists"));

    let stale = api.call(Method::PUT, "/devices/dev1", Some(json!({"status": "disabled"})), &[("If-Match", "\"bm9wZQ==\"")]).await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.error_code(), 412001);

    let quoted = format!("\"{etag}\"");
    let updated = api.call(Method::PUT, "/devices/dev1", Some(json!({"status": "disabled"})), &[("If-Match", &quoted)]).await;
    assert_eq!(updated.status, StatusCode::OK);
    assert_eq!(updated.body["status"], "disabled");
    assert_ne!(updated.body["etag"], json!(etag));
    assert_eq!(updated.body["authentication"]["symmetricKey"]["primaryKey"], json!(primary), "keys kept on update");
    assert_eq!(updated.body["generationId"], created.body["generationId"]);

    let got = api.get("/devices/dev1").await;
    assert_eq!((got.status, got.body["status"].clone()), (StatusCode::OK, json!("disabled")));

    let list = api.get("/devices?top=10").await;
    assert_eq!(list.body.as_array().unwrap().len(), 1);

    let wrong_delete = api.call(Method::DELETE, "/devices/dev1", None, &[("If-Match", &quoted)]).await;
    assert_eq!(wrong_delete.status, StatusCode::PRECONDITION_FAILED, "the old etag no longer matches");
    let deleted = api.call(Method::DELETE, "/devices/dev1", None, &[("If-Match", "\"*\"")]).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = api.get("/devices/dev1").await;
    assert_eq!((gone.status, gone.error_code()), (StatusCode::NOT_FOUND, 404001));
    assert_eq!(api.call(Method::DELETE, "/devices/dev1", None, &[("If-Match", "\"*\"")]).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn given_keys_bad_ids_and_bad_json() {
    let emu = start().await;
    let api = Api::new(&emu);
    let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let body = json!({"authentication": {"type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": ""}}});
    let created = api.put("/devices/with%23hash", body).await;
    assert_eq!(created.status, StatusCode::OK);
    assert_eq!(created.body["deviceId"], "with#hash");
    assert_eq!(created.body["authentication"]["symmetricKey"]["primaryKey"], key);
    assert_eq!(created.body["authentication"]["symmetricKey"]["secondaryKey"].as_str().unwrap().len(), 44);

    let bad_id = api.put("/devices/bad%20id", json!({})).await;
    assert_eq!((bad_id.status, bad_id.error_code()), (StatusCode::BAD_REQUEST, 400004));

    let resp = api
        .client
        .put(format!("{}/devices/x?api-version=2021-04-12", api.base))
        .header("Authorization", api.authorization.clone().unwrap())
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.headers()["iothub-errorcode"], "IotHubFormatError");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["ExceptionMessage"], "");
    let inner: Value = serde_json::from_str(body["Message"].as_str().unwrap()).unwrap();
    assert_eq!(inner["errorCode"], 400006);
    assert!(inner["trackingId"].is_string() && inner["timestampUtc"].is_string() && inner["message"].is_string());
}

#[tokio::test]
async fn module_crud() {
    let emu = start().await;
    let api = Api::new(&emu);
    let missing = api.put("/devices/nodev/modules/m1", json!({})).await;
    assert_eq!((missing.status, missing.error_code()), (StatusCode::NOT_FOUND, 404001));

    api.put("/devices/edge", json!({"capabilities": {"iotEdge": true}})).await;
    let m = api.put("/devices/edge/modules/m1", json!({"moduleId": "m1", "managedBy": "me"})).await;
    assert_eq!(m.status, StatusCode::OK);
    assert_eq!((m.body["moduleId"].clone(), m.body["deviceId"].clone(), m.body["managedBy"].clone()), (json!("m1"), json!("edge"), json!("me")));
    let dup = api.put("/devices/edge/modules/m1", json!({})).await;
    assert_eq!((dup.status, dup.error_code()), (StatusCode::CONFLICT, 409301));
    assert_eq!(dup.error_code_name.as_deref(), Some("ModuleAlreadyExistsOnDevice"));

    let stale = api.call(Method::PUT, "/devices/edge/modules/m1", Some(json!({})), &[("If-Match", "\"old\"")]).await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    let upd = api.call(Method::PUT, "/devices/edge/modules/m1", Some(json!({})), &[("If-Match", "\"*\"")]).await;
    assert_eq!(upd.status, StatusCode::OK);

    assert_eq!(api.get("/devices/edge/modules").await.body.as_array().unwrap().len(), 1);
    assert_eq!(api.get("/devices/edge/modules/m1").await.status, StatusCode::OK);
    let nomod = api.get("/devices/edge/modules/zz").await;
    assert_eq!((nomod.status, nomod.error_code()), (StatusCode::NOT_FOUND, 404010));
    assert_eq!(api.call(Method::DELETE, "/devices/edge/modules/m1", None, &[("If-Match", "\"*\"")]).await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/devices/edge/modules").await.body, json!([]));
    assert!(emu.hub().device_connection_string("edge", Some("m1")).is_none());
}

#[tokio::test]
async fn bulk_limits_and_partial_failure() {
    let emu = start().await;
    let api = Api::new(&emu);
    let ops: Vec<Value> = (0..3).map(|i| json!({"id": format!("b{i}"), "importMode": "create"})).collect();
    let ok = api.post("/devices", Value::Array(ops)).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body, json!({"isSuccessful": true, "errors": [], "warnings": []}));
    assert_eq!(api.get("/devices").await.body.as_array().unwrap().len(), 3);

    let mixed = json!([{"id": "b0", "importMode": "create"}, {"id": "b9", "importMode": "create"}, {"id": "b1", "importMode": "delete"}]);
    let partial = api.post("/devices", mixed).await;
    assert_eq!(partial.status, StatusCode::BAD_REQUEST);
    assert_eq!(partial.body["isSuccessful"], false);
    assert_eq!(partial.body["errors"].as_array().unwrap().len(), 1);
    assert_eq!(partial.body["errors"][0]["deviceId"], "b0");
    assert_eq!(partial.body["errors"][0]["errorCode"], "DeviceAlreadyExists");
    let ids: Vec<String> = api.get("/devices").await.body.as_array().unwrap().iter().map(|d| d["deviceId"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, vec!["b0", "b2", "b9"]);

    let too_many: Vec<Value> = (0..101).map(|i| json!({"id": format!("x{i}"), "importMode": "create"})).collect();
    let big = api.post("/devices", Value::Array(too_many)).await;
    assert_eq!((big.status, big.error_code()), (StatusCode::PAYLOAD_TOO_LARGE, 413002));
    assert_eq!(api.get("/devices").await.body.as_array().unwrap().len(), 3, "nothing applied");

    let hundred: Vec<Value> = (0..100).map(|i| json!({"id": format!("h{i}"), "importMode": "create"})).collect();
    assert_eq!(api.post("/devices", Value::Array(hundred)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn query_and_statistics() {
    let emu = start().await;
    let api = Api::new(&emu);
    for (id, city) in [("q1", "Rome"), ("q2", "Oslo"), ("q3", "Rome")] {
        api.put(&format!("/devices/{id}"), json!({})).await;
        api.patch(&format!("/twins/{id}"), json!({"tags": {"site": {"city": city}}})).await;
    }
    emu.hub().patch_reported(&ironhub_emulator::Identity::device("q3"), &json!({"temp": 30})).unwrap();
    api.call(Method::PUT, "/devices/q2", Some(json!({"status": "disabled"})), &[("If-Match", "\"*\"")]).await;

    let all = api.post("/devices/query", json!({"query": "SELECT * FROM devices"})).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.item_type.as_deref(), Some("twin"));
    assert_eq!(all.body.as_array().unwrap().len(), 3);
    let ids = |a: &support::Answer| a.body.as_array().unwrap().iter().map(|t| t["deviceId"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let rome = api.post("/devices/query", json!({"query": "SELECT * FROM devices WHERE tags.site.city = 'Rome'"})).await;
    assert_eq!(ids(&rome), vec!["q1", "q3"]);
    let combined = api
        .post("/devices/query", json!({"query": "SELECT * FROM devices WHERE properties.reported.temp > 20 OR deviceId = 'q2'"}))
        .await;
    assert_eq!(ids(&combined), vec!["q2", "q3"]);
    let one = api.post("/devices/query", json!({"query": "SELECT * FROM devices WHERE deviceId='q1' AND tags.site.city='Rome'"})).await;
    assert_eq!(ids(&one), vec!["q1"]);
    let page1 = api.call(Method::POST, "/devices/query", Some(json!({"query": "SELECT * FROM devices"})), &[("x-ms-max-item-count", "2")]).await;
    assert_eq!(ids(&page1), vec!["q1", "q2"]);
    assert_eq!(page1.continuation.as_deref(), Some("2"));
    assert_eq!(all.continuation, None);
    let page2 = api
        .call(Method::POST, "/devices/query", Some(json!({"query": "SELECT * FROM devices"})), &[("x-ms-max-item-count", "2"), ("x-ms-continuation", "2")])
        .await;
    assert_eq!(ids(&page2), vec!["q3"]);
    assert_eq!(page2.continuation, None);
    let bad = api.post("/devices/query", json!({"query": "DELETE everything"})).await;
    assert_eq!((bad.status, bad.error_code()), (StatusCode::BAD_REQUEST, 400004));

    let stats = api.get("/statistics/devices").await;
    assert_eq!(stats.body, json!({"totalDeviceCount": 3, "enabledDeviceCount": 2, "disabledDeviceCount": 1}));
    assert_eq!(api.get("/statistics/service").await.body, json!({"connectedDeviceCount": 0}));
}

#[tokio::test]
async fn service_auth_is_401002_for_every_bad_token() {
    let emu = start().await;
    let host = emu.hostname().to_owned();
    let key = emu.hub().policy_key().to_owned();
    let other_key = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
    let future = support::unix_now() + 600;
    let tokens = [
        ironhub_protocol::sas::generate_token(&host, other_key, Some("iothubowner"), future).unwrap(),
        ironhub_protocol::sas::generate_token(&host, &key, Some("iothubowner"), support::unix_now() - 10).unwrap(),
        ironhub_protocol::sas::generate_token("elsewhere.azure-devices.net", &key, Some("iothubowner"), future).unwrap(),
        ironhub_protocol::sas::generate_token(&host, &key, Some("nosuchpolicy"), future).unwrap(),
        "SharedAccessSignature garbage".to_owned(),
    ];
    let mut api = Api::new(&emu);
    for token in tokens {
        api.authorization = Some(token);
        let a = api.get("/devices").await;
        assert_eq!((a.status, a.error_code()), (StatusCode::UNAUTHORIZED, 401002));
        assert_eq!(a.error_code_name.as_deref(), Some("IotHubUnauthorizedAccess"));
        assert!(!a.body.to_string().contains(&key));
    }
    api.authorization = None;
    assert_eq!(api.get("/devices").await.status, StatusCode::UNAUTHORIZED);

    // Host case and a port in the token's host are accepted.
    api.authorization = Some(
        ironhub_protocol::sas::generate_token(&format!("{}:{}", host.to_uppercase(), emu.https_port()), &key, Some("iothubowner"), future)
            .unwrap(),
    );
    assert_eq!(api.get("/devices").await.status, StatusCode::OK);

    // Rights: registryRead reads but cannot write; service cannot touch the registry.
    let read = Api::with_policy(&emu, "registryRead");
    assert_eq!(read.get("/devices").await.status, StatusCode::OK);
    assert_eq!(read.put("/devices/r", json!({})).await.status, StatusCode::UNAUTHORIZED);
    let rw = Api::with_policy(&emu, "registryReadWrite");
    assert_eq!(rw.put("/devices/r", json!({})).await.status, StatusCode::OK);
    assert_eq!(rw.patch("/twins/r", json!({"tags": {"a": 1}})).await.status, StatusCode::UNAUTHORIZED);
    let service = Api::with_policy(&emu, "service");
    assert_eq!(service.put("/devices/s", json!({})).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(service.patch("/twins/r", json!({"tags": {"a": 1}})).await.status, StatusCode::OK);
    let device = Api::with_policy(&emu, "device");
    assert_eq!(device.get("/twins/r").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn service_connection_string_names_the_port() {
    let emu = start().await;
    let cs = emu.service_connection_string();
    assert!(cs.starts_with(&format!("HostName=localhost:{};SharedAccessKeyName=iothubowner;SharedAccessKey=", emu.https_port())), "{cs}");
    let parsed = ironhub_protocol::connection_string::ConnectionString::parse(cs).unwrap();
    assert_eq!(parsed.shared_access_key.as_deref(), Some(emu.hub().policy_key()));
    let unknown = Api::new(&emu).get("/nothing/here").await;
    assert_eq!((unknown.status, unknown.error_code_name.as_deref()), (StatusCode::NOT_FOUND, Some("NotFound")));
}
