//! Signing on the signer's own threads: offloaded tokens verify, the choice
//! follows the configuration and the active key's algorithm, and a failed
//! or panicking signature fails closed (500, the inner service is not
//! called).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::ThreadId;
use std::time::Duration;

use crate::support::signer::{Seen, bearer, json_body, recording, verify};
use http::{Request, StatusCode};
use tower::{Layer, Service, ServiceExt};
use tower_jwt_signer::keys::{PublicJwk, SignError, SigningBackend};
use tower_jwt_signer::signer::Offload;
use tower_jwt_signer::{Algorithm, JwtSignerLayer, KeyRegistry, SigningKey};

/// A key that notes the thread each signature is made on, and can be told
/// to panic or to fail.
#[derive(Debug)]
struct Watched {
    key: SigningKey,
    threads: Arc<Mutex<Vec<ThreadId>>>,
    behaviour: Behaviour,
}

#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Sign,
    Panic,
    Fail,
}

impl Watched {
    fn new(alg: Algorithm, behaviour: Behaviour) -> (Self, Arc<Mutex<Vec<ThreadId>>>) {
        let threads = Arc::new(Mutex::new(Vec::new()));
        let watched = Watched {
            key: SigningKey::generate(alg).unwrap(),
            threads: Arc::clone(&threads),
            behaviour,
        };
        (watched, threads)
    }
}

impl SigningBackend for Watched {
    fn public_jwk(&self) -> &PublicJwk {
        self.key.public_jwk()
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, SignError> {
        self.threads
            .lock()
            .unwrap()
            .push(std::thread::current().id());
        match self.behaviour {
            Behaviour::Sign => self.key.sign(input),
            Behaviour::Panic => panic!("the signer blew up"),
            Behaviour::Fail => Err(SignError::Other("backend down".into())),
        }
    }
}

async fn send(
    layer: &JwtSignerLayer,
    request: Request<()>,
) -> (http::StatusCode, Seen, serde_json::Value) {
    let seen = Seen::default();
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        layer.layer(recording(&seen)).oneshot(request),
    )
    .await
    .expect("bounded")
    .expect("infallible");
    let status = response.status();
    let body = if status == StatusCode::OK {
        serde_json::Value::Null
    } else {
        json_body(response.into_body()).await
    };
    (status, seen, body)
}

/// Whether the one signature of `threads` was made on this thread. The
/// tests run on a current-thread runtime: the calling task is on the test's
/// thread, the signing threads are not.
fn signed_here(threads: &Mutex<Vec<ThreadId>>) -> bool {
    let threads = threads.lock().unwrap();
    assert_eq!(threads.len(), 1, "one signature");
    threads[0] == std::thread::current().id()
}

#[tokio::test]
async fn offloaded_tokens_verify_for_every_algorithm() {
    for alg in Algorithm::ALL {
        let (key, threads) = Watched::new(alg, Behaviour::Sign);
        let registry = KeyRegistry::new(key);
        let layer = JwtSignerLayer::builder(registry.clone())
            .issuer("gateway")
            .offload(Offload::Blocking)
            .build()
            .unwrap();
        let (status, seen, _) = send(&layer, Request::get("/").body(()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{alg}");
        let token = bearer(&seen.only().headers);
        let verified = verify(&token, &registry).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(verified.header["alg"], alg.as_str());
        assert_eq!(verified.claims["iss"], "gateway");
        assert!(!signed_here(&threads), "{alg}: signed on a signing thread");
        assert!(seen.only().headers["authorization"].is_sensitive());
    }
}

#[tokio::test]
async fn auto_offloads_the_slow_algorithms_only() {
    for alg in Algorithm::ALL {
        let (key, threads) = Watched::new(alg, Behaviour::Sign);
        let registry = KeyRegistry::new(key);
        let layer = JwtSignerLayer::new(registry.clone());
        let (status, seen, _) = send(&layer, Request::get("/").body(()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        verify(&bearer(&seen.only().headers), &registry).unwrap();
        assert_eq!(signed_here(&threads), !alg.is_slow(), "{alg}");
    }
}

#[tokio::test]
async fn inline_signs_on_the_calling_task() {
    let (key, threads) = Watched::new(Algorithm::RS256, Behaviour::Sign);
    let registry = KeyRegistry::new(key);
    let layer = JwtSignerLayer::builder(registry.clone())
        .offload(Offload::Inline)
        .build()
        .unwrap();
    let (status, seen, _) = send(&layer, Request::get("/").body(()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    verify(&bearer(&seen.only().headers), &registry).unwrap();
    assert!(signed_here(&threads));
}

#[tokio::test]
async fn the_choice_follows_the_active_key_after_a_rotation() {
    let (fast, fast_threads) = Watched::new(Algorithm::ES256, Behaviour::Sign);
    let (slow, slow_threads) = Watched::new(Algorithm::PS256, Behaviour::Sign);
    let registry = KeyRegistry::new(fast);
    let layer = JwtSignerLayer::new(registry.clone());
    let (status, _, _) = send(&layer, Request::get("/").body(()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(signed_here(&fast_threads));
    registry.rotate_to(slow, Duration::from_secs(60)).unwrap();
    let (status, seen, _) = send(&layer, Request::get("/").body(()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    verify(&bearer(&seen.only().headers), &registry).unwrap();
    assert!(!signed_here(&slow_threads));
}

#[tokio::test]
async fn a_panicking_offloaded_signer_fails_closed() {
    let (key, threads) = Watched::new(Algorithm::RS256, Behaviour::Panic);
    let layer = JwtSignerLayer::builder(KeyRegistry::new(key))
        .offload(Offload::Blocking)
        .build()
        .unwrap();
    let request = Request::get("/")
        .header("authorization", "Bearer from-the-client")
        .body(())
        .unwrap();
    let (status, seen, body) = send(&layer, request).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(seen.count(), 0, "the inner service is not called");
    assert_eq!(body["error"], "signing_failed");
    assert_eq!(threads.lock().unwrap().len(), 1, "the signer did run");
}

#[tokio::test]
async fn a_failing_offloaded_signer_fails_closed() {
    let (key, _) = Watched::new(Algorithm::ES384, Behaviour::Fail);
    let layer = JwtSignerLayer::new(KeyRegistry::new(key));
    let (status, seen, body) = send(&layer, Request::get("/").body(()).unwrap()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(seen.count(), 0);
    assert_eq!(body["error"], "signing_failed");
    assert!(!body.to_string().contains("backend"), "no internals");
}

#[tokio::test]
async fn an_offloaded_request_replaces_every_existing_token() {
    let registry = KeyRegistry::generate(Algorithm::RS256).unwrap();
    let layer = JwtSignerLayer::new(registry.clone());
    let request = Request::get("/")
        .header("authorization", "Bearer one")
        .header("authorization", "Bearer two")
        .body(())
        .unwrap();
    let (status, seen, _) = send(&layer, request).await;
    assert_eq!(status, StatusCode::OK);
    // `bearer` asserts there is exactly one value.
    verify(&bearer(&seen.only().headers), &registry).unwrap();
}

#[tokio::test]
async fn a_dropped_request_never_reaches_the_inner_service() {
    let registry = KeyRegistry::generate(Algorithm::RS256).unwrap();
    let layer = JwtSignerLayer::new(registry);
    let seen = Seen::default();
    let mut service = layer.layer(recording(&seen));
    service.ready().await.unwrap();
    let future = service.call(Request::get("/").body(()).unwrap());
    drop(future);
    // Give the signing threads time to finish a signature they may have
    // started: nothing may be forwarded afterwards either.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(seen.count(), 0);
    // The service still works.
    let response = service
        .ready()
        .await
        .unwrap()
        .call(Request::get("/").body(()).unwrap());
    let response = tokio::time::timeout(Duration::from_secs(30), response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(seen.count(), 1);
}

/// A key that counts its signatures and says when it is dropped.
#[derive(Debug)]
struct Counted {
    key: SigningKey,
    signatures: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl SigningBackend for Counted {
    fn public_jwk(&self) -> &PublicJwk {
        self.key.public_jwk()
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, SignError> {
        self.signatures.fetch_add(1, Ordering::SeqCst);
        self.key.sign(input)
    }
}

/// A key whose signatures wait until the gate opens (at most a minute, so
/// that a failing test never hangs a signing thread for good).
#[derive(Debug)]
struct Gated {
    key: SigningKey,
    started: Arc<AtomicUsize>,
    open: Arc<(Mutex<bool>, Condvar)>,
}

impl SigningBackend for Gated {
    fn public_jwk(&self) -> &PublicJwk {
        self.key.public_jwk()
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, SignError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let (open, opened) = &*self.open;
        let guard = open.lock().unwrap();
        let (guard, _) = opened
            .wait_timeout_while(guard, Duration::from_secs(60), |open| !*open)
            .unwrap();
        drop(guard);
        self.key.sign(input)
    }
}

/// Polls `condition` every millisecond; panics after 30 s.
async fn until(what: &str, condition: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for: {what}"));
}

/// A request dropped while its signature waits for a signing thread is
/// never signed: every signing thread is held busy, the request is queued
/// and dropped, the threads are released, and once the queued job is gone
/// (its key, held by nothing else, is dropped) the key has made no
/// signature. The same request not dropped is signed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_before_its_turn_is_not_signed() {
    // The pool's size: one thread per core, at most 16 (`signer::pool`).
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(16);
    for drop_it in [true, false] {
        let started = Arc::new(AtomicUsize::new(0));
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let gated = JwtSignerLayer::builder(KeyRegistry::new(Gated {
            key: SigningKey::generate(Algorithm::ES256).unwrap(),
            started: Arc::clone(&started),
            open: Arc::clone(&open),
        }))
        .offload(Offload::Blocking)
        .build()
        .unwrap();
        let mut holders = tokio::task::JoinSet::new();
        for _ in 0..threads {
            let service = gated.layer(tower::service_fn(|_: Request<()>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(()))
            }));
            holders.spawn(service.oneshot(Request::get("/").body(()).unwrap()));
        }
        // Every signing thread is inside a gated signature (other tests'
        // jobs, if any, finish first: none of them waits).
        until("every signing thread held", || {
            started.load(Ordering::SeqCst) >= threads
        })
        .await;

        let signatures = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicBool::new(false));
        let registry = KeyRegistry::new(Counted {
            key: SigningKey::generate(Algorithm::ES256).unwrap(),
            signatures: Arc::clone(&signatures),
            dropped: Arc::clone(&dropped),
        });
        let seen = Seen::default();
        let mut service = JwtSignerLayer::builder(registry)
            .offload(Offload::Blocking)
            .build()
            .unwrap()
            .layer(recording(&seen));
        service.ready().await.unwrap();
        // The call queues the signature; no thread is free to take it.
        let future = service.call(Request::get("/").body(()).unwrap());
        let kept = if drop_it {
            drop(future);
            None
        } else {
            Some(future)
        };
        // From here on only the queued job holds the key.
        drop(service);
        assert_eq!(signatures.load(Ordering::SeqCst), 0, "not signed yet");

        // Release the signing threads.
        *open.0.lock().unwrap() = true;
        open.1.notify_all();
        while let Some(held) = holders.join_next().await {
            assert_eq!(held.unwrap().unwrap().status(), StatusCode::OK);
        }
        if let Some(kept) = kept {
            let response = tokio::time::timeout(Duration::from_secs(30), kept)
                .await
                .expect("bounded")
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
        until("the queued job is done with the key", || {
            dropped.load(Ordering::SeqCst)
        })
        .await;
        if drop_it {
            assert_eq!(
                signatures.load(Ordering::SeqCst),
                0,
                "a dropped request was signed"
            );
            assert_eq!(seen.count(), 0);
        } else {
            assert_eq!(signatures.load(Ordering::SeqCst), 1);
            assert_eq!(seen.count(), 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_offloaded_requests_all_verify() {
    let registry = KeyRegistry::generate(Algorithm::PS256).unwrap();
    let layer = JwtSignerLayer::builder(registry.clone())
        .offload(Offload::Blocking)
        .build()
        .unwrap();
    let seen = Seen::default();
    // The inner service verifies each token it receives.
    let backend_registry = registry.clone();
    let inner = tower::service_fn(move |request: Request<()>| {
        let verified = verify(&bearer(request.headers()), &backend_registry).is_ok();
        async move {
            let status = if verified {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            };
            let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
            *response.status_mut() = status;
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let counting = recording::<()>(&seen);
    let service = layer.layer(tower::service_fn(move |request: Request<()>| {
        let mut counting = counting.clone();
        let mut inner = inner.clone();
        async move {
            let (parts, body) = request.into_parts();
            let _ = counting.call(Request::from_parts(parts.clone(), ())).await;
            inner.call(Request::from_parts(parts, body)).await
        }
    }));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        tasks.spawn(service.clone().oneshot(Request::get("/").body(()).unwrap()));
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(result) = tasks.join_next().await {
            assert_eq!(result.unwrap().unwrap().status(), StatusCode::OK);
        }
    })
    .await
    .expect("bounded");
    assert_eq!(seen.count(), 32);
}

/// Drives a future to completion on this thread, without any runtime.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        assert!(std::time::Instant::now() < deadline, "bounded");
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

#[test]
fn offloading_needs_no_runtime() {
    let (key, threads) = Watched::new(Algorithm::RS256, Behaviour::Sign);
    let registry = KeyRegistry::new(key);
    let layer = JwtSignerLayer::builder(registry.clone())
        .offload(Offload::Blocking)
        .build()
        .unwrap();
    let seen = Seen::default();
    let response = block_on(
        layer
            .layer(recording(&seen))
            .oneshot(Request::get("/").body(()).unwrap()),
    )
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    verify(&bearer(&seen.only().headers), &registry).unwrap();
    assert!(!signed_here(&threads));
}

#[tokio::test]
async fn a_panicking_signer_does_not_take_the_signing_threads_down() {
    let (broken, _) = Watched::new(Algorithm::PS256, Behaviour::Panic);
    let broken = JwtSignerLayer::builder(KeyRegistry::new(broken))
        .offload(Offload::Blocking)
        .build()
        .unwrap();
    // More panics than there can be signing threads.
    for _ in 0..40 {
        let (status, seen, _) = send(&broken, Request::get("/").body(()).unwrap()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(seen.count(), 0);
    }
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let working = JwtSignerLayer::builder(registry.clone())
        .offload(Offload::Blocking)
        .build()
        .unwrap();
    let (status, seen, _) = send(&working, Request::get("/").body(()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    verify(&bearer(&seen.only().headers), &registry).unwrap();
}
