//! Twin operations from the device side and the service client (If-Match / 412, replace, methods).

mod common;

use ironhub::service::DirectMethodRequest;
use ironhub::ErrorKind;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_twin_and_patch_reported_round_trip() {
    let env = common::start().await;
    let client = env.module_client("t1", "m1");
    let twin = client.get_twin().await.expect("get_twin");
    assert!(twin["desired"]["$version"].is_u64(), "{twin}");
    assert!(twin["reported"]["$version"].is_u64(), "{twin}");
    client.patch_twin_reported_properties(&json!({"fw": "1.2.3", "temp": {"max": 40}})).await.expect("patch");
    let twin = client.get_twin().await.unwrap();
    assert_eq!(twin["reported"]["fw"], "1.2.3");
    assert_eq!(twin["reported"]["temp"]["max"], 40);
    let service_view = env.service.get_twin("t1", Some("m1")).await.unwrap();
    assert_eq!(service_view["properties"]["reported"]["fw"], "1.2.3");
    // null deletes
    client.patch_twin_reported_properties(&json!({"fw": null})).await.unwrap();
    assert!(client.get_twin().await.unwrap()["reported"].get("fw").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_twin_patches_are_refused() {
    let env = common::start().await;
    let client = env.device_client("t2");
    let err = client.patch_twin_reported_properties(&json!([1, 2])).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    // A key the hub refuses ('$' prefix): status >= 300 → ClientError caused by ServiceError.
    let err = client.patch_twin_reported_properties(&json!({"bad key$": 1})).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Client, "{err}");
    assert_eq!(err.service_status(), Some(400), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_update_twin_honours_if_match() {
    let env = common::start().await;
    env.device("t3");
    let twin = env.service.get_twin("t3", None).await.unwrap();
    let etag = twin["etag"].as_str().unwrap().to_string();
    let updated = env
        .service
        .update_twin("t3", None, &json!({"tags": {"site": "a"}}), Some(&etag))
        .await
        .expect("matching etag");
    assert_eq!(updated["tags"]["site"], "a");
    let err = env.service.update_twin("t3", None, &json!({"tags": {"site": "b"}}), Some(&etag)).await.unwrap_err();
    assert!(matches!(err, ironhub::Error::PreconditionFailed(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Service);
    env.service.update_twin("t3", None, &json!({"tags": {"site": "c"}}), Some("*")).await.expect("wildcard");
    let replaced = env
        .service
        .replace_twin("t3", None, &json!({"tags": {"only": 1}, "properties": {"desired": {"d": 1}}}), None)
        .await
        .unwrap();
    assert_eq!(replaced["tags"], json!({"only": 1}));
    assert_eq!(replaced["properties"]["desired"]["d"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoking_a_method_on_an_offline_device_is_a_service_error() {
    let env = common::start().await;
    env.device("t4");
    let mut r = DirectMethodRequest::new("nobody", json!({}));
    r.response_timeout_in_seconds = 5;
    let err = env.service.invoke_method("t4", None, &r).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Service);
    assert_eq!(err.service_status(), Some(404));
}
