//! Tiers against the real server: requests per minute (429 with `Retry-After`) and storage
//! quotas per tier, set with `adiuva-server admin set-tier`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;

/// Requests the limit allows before the first 429.
fn requests_until_limited(server: &Server, token: &str) -> (usize, u64) {
    for made in 0.. {
        let answer = server.call("GET", "/api/v1/auth/me", Some(token), Body::None);
        if answer.status == 429 {
            assert_eq!(answer.code(), "relay.rate_limited");
            let retry_after: u64 = answer.header("retry-after").unwrap().parse().unwrap();
            return (made, retry_after);
        }
        answer.expect(200);
    }
    unreachable!()
}

#[test]
fn each_tier_gets_its_requests_per_minute_then_429_with_retry_after() {
    let (_dir, data) = data_dir();
    let mut server = Server::start(&data, &[]);
    let tiers = [("free", 1, 20), ("pro", 1, 60), ("power", 1, 120), ("team", 3, 600)];
    for (i, (tier, seats, _)) in tiers.iter().enumerate() {
        register(&server, &format!("{tier}@example.com"), &TestDevice::new(i as u8 + 1));
        if *tier != "free" {
            server.set_tier(&format!("{tier}@example.com"), tier, *seats);
        }
    }
    for (i, (tier, _, per_minute)) in tiers.iter().enumerate() {
        let session = login(&server, &format!("{tier}@example.com"), &TestDevice::new(i as u8 + 1));
        let me = server.call("GET", "/api/v1/auth/me", Some(&session.access), Body::None).expect(200).json();
        assert_eq!(me["requests_per_minute"], *per_minute, "{tier}");
        let started = std::time::Instant::now();
        let (allowed, retry_after) = requests_until_limited(&server, &session.access);
        // The `me` above was one of them; the limit replenishes per_minute/60 requests each
        // second the loop ran (slow on a loaded machine), so that many more may pass.
        let replenished = (started.elapsed().as_secs_f64() * f64::from(*per_minute) / 60.0).ceil() as usize;
        let per_minute = *per_minute as usize;
        assert!(
            (per_minute - 1..=per_minute + 1 + replenished).contains(&allowed),
            "{tier}: {allowed} of {per_minute}"
        );
        assert!((1..=60).contains(&retry_after), "{tier}: Retry-After {retry_after}");
    }
}

#[test]
fn quotas_per_tier_refuse_with_a_stable_code_and_lose_nothing() {
    let (_dir, data) = data_dir();
    let mut server = Server::start(&data, &[]);
    let device = TestDevice::new(1);
    let email = "quota@example.com";
    let session = register(&server, email, &device);
    server.call("POST", "/api/v1/workspaces", Some(&session.access), Body::Json(json!({"id": "ws"}))).expect(201);
    // Free: relay storage 0 (peer-to-peer sync only).
    put_blob(&server, &session.access, "ws", b"refused").expect_error(402, "relay.quota_exceeded");
    assert_eq!(
        server.call("GET", "/api/v1/workspaces/ws/changes", Some(&session.access), Body::None).expect(200).json()["head"],
        0
    );

    for (tier, quota) in [("pro", json!(5_000_000_000u64)), ("power", json!(50_000_000_000u64)), ("team", json!(null))]
    {
        server.set_tier(email, tier, 1);
        let session = login(&server, email, &device);
        let me = server.call("GET", "/api/v1/auth/me", Some(&session.access), Body::None).expect(200).json();
        assert_eq!(me["quota_bytes"], quota, "{tier}");
        put_blob(&server, &session.access, "ws", tier.as_bytes()).expect(201);
    }
    // Back to free: new blobs are refused, everything stored stays readable.
    server.set_tier(email, "free", 1);
    let session = login(&server, email, &device);
    put_blob(&server, &session.access, "ws", b"one more").expect_error(402, "relay.quota_exceeded");
    // A retry of a blob already stored charges nothing, so it still succeeds.
    put_blob(&server, &session.access, "ws", b"pro").expect(200);
    let page =
        server.call("GET", "/api/v1/workspaces/ws/changes", Some(&session.access), Body::None).expect(200).json();
    assert_eq!(page["head"], 3);
    for tier in ["pro", "power", "team"] {
        let got = server.call(
            "GET",
            &format!("/api/v1/workspaces/ws/blobs/{}", blob_id(tier.as_bytes())),
            Some(&session.access),
            Body::None,
        );
        assert_eq!(got.expect(200).bytes, tier.as_bytes());
    }
}
