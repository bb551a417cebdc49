//! Replays the fuzz corpus (`tests/fuzz/corpus/`) on every `make test`:
//! every input the fuzzers kept, through the decoders, through the service
//! in process, and against a real `usersvc serve` over HTTP/2, where each
//! must end with a gRPC status on a connection that stays up. `make fuzz`
//! grows the corpus; see `tests/fuzz/harness.rs` for what each input means.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;

#[path = "../fuzz/harness.rs"]
mod harness;

use crate::support::process::ServerProcess;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "an empty corpus in {}", dir.display());
    inputs
}

#[test]
fn the_decode_corpus_round_trips() {
    for (path, input) in corpus("decode") {
        let outcome = std::panic::catch_unwind(|| harness::decode(&input));
        assert!(outcome.is_ok(), "{}", path.display());
    }
}

#[test]
fn the_service_corpus_gets_a_status_in_process() {
    let mut service = harness::InProcess::new();
    for (path, input) in corpus("service") {
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| service.call(&input)));
        assert!(outcome.is_ok(), "{}", path.display());
    }
}

/// Each input of the service corpus, and inputs made of random bytes for
/// every method, sent to a real server as a client would, all on one
/// connection: each gets a status, and the connection stays up.
#[tokio::test(flavor = "multi_thread")]
async fn random_bytes_as_any_message_get_a_status_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&["--store", "memory", "--rate-limit", "0"], dir.path());
    let admin = |index: usize| {
        usersvc::auth::mint(
            &crate::support::secret(),
            &format!("fuzz-{index}"),
            usersvc::domain::Role::Admin,
            Duration::from_secs(600),
            &Default::default(),
        )
        .unwrap()
    };
    let addr = server.url.trim_start_matches("http://").to_owned();
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);

    let mut inputs: Vec<(String, Vec<u8>)> = corpus("service")
        .into_iter()
        .map(|(path, bytes)| (path.display().to_string(), bytes))
        .collect();
    // Random messages of every method, framed and not: seeded, so that a
    // failure can be replayed.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for method in 0..usersvc::pb::METHODS.len() {
        for mode in 0..2u8 {
            for _ in 0..20 {
                let len = (next() % 64) as usize;
                let mut input = vec![method as u8, mode];
                input.extend((0..len).map(|_| next() as u8));
                inputs.push((format!("random {input:?}"), input));
            }
        }
    }

    // Many at once on the one connection, as a busy client would send
    // them, each as a caller of its own, so that a caller's cap on open
    // streams never stands in for the status under test.
    let calls = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let mut running = tokio::task::JoinSet::new();
    for (index, (name, input)) in inputs.into_iter().enumerate() {
        let Some(case) = harness::Case::new(&input) else {
            continue;
        };
        let request = http::Request::post(format!("{}{}", server.url, case.path()))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("authorization", format!("Bearer {}", admin(index)))
            .body(())
            .unwrap();
        let permit = std::sync::Arc::clone(&calls).acquire_owned().await.unwrap();
        client = client.ready().await.expect("the connection stays up");
        let (response, mut send) = client.send_request(request, false).unwrap();
        send.send_data(case.body.clone(), true).unwrap();
        running.spawn(async move {
            let subscriptions = case.subscriptions();
            let answered = async {
                let response = response.await.unwrap_or_else(|e| panic!("{name}: {e}"));
                harness::response_outcome(response.map(H2Body), subscriptions).await
            };
            // Every call ends, or (a watch) confirms what it was sent, well
            // within ten seconds; one that does neither has hung.
            let outcome = tokio::time::timeout(Duration::from_secs(10), answered)
                .await
                .ok();
            drop(permit);
            case.check(outcome);
        });
    }
    while let Some(call) = running.join_next().await {
        call.unwrap();
    }
    assert!(!connection.is_finished(), "the connection was dropped");
}

/// h2's receive stream as an `http_body::Body`, for `response_outcome`.
struct H2Body(h2::RecvStream);

impl http_body::Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, h2::Error>>> {
        use std::task::Poll;
        let body = &mut self.0;
        match body.poll_data(cx) {
            Poll::Ready(Some(Ok(data))) => {
                let _ = body.flow_control().release_capacity(data.len());
                Poll::Ready(Some(Ok(http_body::Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => match body.poll_trailers(cx) {
                Poll::Ready(Ok(Some(trailers))) => {
                    Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
                }
                Poll::Ready(Ok(None)) => Poll::Ready(None),
                Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                Poll::Pending => Poll::Pending,
            },
            Poll::Pending => Poll::Pending,
        }
    }
}
