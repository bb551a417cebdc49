//! A client's `x-request-id` reaches the response and every log line of its
//! call, so only a sane one is taken: at most 128 characters of
//! `[A-Za-z0-9._:-]`. Anything else is replaced by an id the server makes.
//! Shown on a real `usersvc serve`.

use usersvc::pb;

use crate::support::process::ServerProcess;

/// GetUser with `x-request-id: sent`; the id the server answered with.
async fn answered_id(url: &str, sent: &str) -> String {
    let channel = tonic::transport::Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = tonic::Request::new(pb::GetUserRequest {
        user_id: "nobody".into(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", sent.parse().unwrap());
    let status = pb::client::UserServiceClient::new(channel)
        .get_user(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    status
        .metadata()
        .get("x-request-id")
        .expect("an id in the answer")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_a_sane_request_id_is_echoed_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&["--store", "memory"], dir.path());
    let long = "a".repeat(10_000);
    let sane = "trace-7:span.42_x";
    assert_eq!(answered_id(&server.url, sane).await, sane);
    let mut replaced = Vec::new();
    for sent in [long.as_str(), "has space", "quote\"d", &"b".repeat(129)] {
        let answered = answered_id(&server.url, sent).await;
        assert_ne!(answered, sent);
        assert!(
            answered.starts_with("usersvc-") && answered.len() <= 128,
            "{answered}"
        );
        replaced.push(answered);
    }

    server.terminate();
    let (_, log) = tokio::task::spawn_blocking(move || server.wait_with_log())
        .await
        .unwrap();
    assert!(
        log.iter().all(|line| !line.contains(&long[..200])),
        "the long id was logged"
    );
    assert!(log.iter().any(|line| line.contains(sane)));
    for id in replaced {
        assert!(log.iter().any(|line| line.contains(&id)), "{id} not logged");
    }
}
