//! Hostile input: random bytes, broken HTTP/2 frames and malformed protobuf sent to
//! the GCS and a raylet for a bounded time. Both must keep serving real clients and
//! must not panic.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use rand::Rng;
use ray_tests::*;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

/// Sends raw bytes as a gRPC message and ignores what comes back.
#[derive(Clone, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}
impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}
impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let v = src.chunk().to_vec();
        src.advance(v.len());
        Ok(Some(v))
    }
}

const GCS_METHODS: &[&str] = &[
    "/ray.rpc.NodeInfoGcsService/RegisterNode",
    "/ray.rpc.NodeInfoGcsService/UnregisterNode",
    "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo",
    "/ray.rpc.NodeResourceGcsService/ReportResources",
    "/ray.rpc.InternalKvGcsService/Put",
    "/ray.rpc.InternalKvGcsService/Get",
    "/ray.rpc.InternalKvGcsService/Del",
    "/ray.rpc.InternalKvGcsService/Keys",
    "/ray.rpc.autoscaler.AutoscalerStateService/GetClusterResourceState",
    "/ray.rpc.autoscaler.AutoscalerStateService/ReportAutoscalingState",
    "/ray.rpc.autoscaler.AutoscalerStateService/RequestClusterResourceConstraint",
    "/ray.rpc.GcsSubscriberService/Subscribe",
    "/grpc.health.v1.Health/Check",
    "/no.such.Service/Method",
];
const RAYLET_METHODS: &[&str] = &["/ray.rpc.NodeManagerService/GetNodeStats", "/grpc.health.v1.Health/Check", "/x/y"];

fn random_message(rng: &mut impl Rng) -> Vec<u8> {
    let len = match rng.random_range(0..10) {
        0 => 0,
        1..=6 => rng.random_range(1..64),
        7 | 8 => rng.random_range(64..4096),
        _ => rng.random_range(4096..200_000),
    };
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

async fn grpc_garbage(addr: &str, methods: &[&str], token: &str, deadline: Instant) -> usize {
    let mut sent = 0;
    let ch = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut rng = rand::rng();
    while Instant::now() < deadline {
        let method = methods[rng.random_range(0..methods.len())];
        let mut req = tonic::Request::new(random_message(&mut rng));
        if rng.random_bool(0.8) {
            req.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {token}")).unwrap());
        }
        req.set_timeout(Duration::from_millis(500));
        let mut grpc = tonic::client::Grpc::new(ch.clone());
        if grpc.ready().await.is_err() {
            continue;
        }
        let path = http::uri::PathAndQuery::from_maybe_shared(method.to_string()).unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(1), grpc.unary(req, path, RawCodec)).await;
        sent += 1;
    }
    // One message above the size limit.
    let mut req = tonic::Request::new(vec![7u8; 17 * 1024 * 1024]);
    req.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {token}")).unwrap());
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_maybe_shared(methods[0].to_string()).unwrap();
    let r = grpc.unary(req, path, RawCodec).await;
    assert!(r.is_err(), "an oversized message must be refused");
    sent + 1
}

fn tcp_garbage(addr: &str, deadline: Instant) -> usize {
    let mut rng = rand::rng();
    let mut sent = 0;
    while Instant::now() < deadline {
        let Ok(mut s) = TcpStream::connect(addr) else { continue };
        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
        let mut payload = Vec::new();
        if rng.random_bool(0.5) {
            payload.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
            // A frame header claiming a huge length, then junk.
            payload.extend_from_slice(&[0xff, 0xff, 0xff, rng.random(), rng.random(), 0, 0, 0, 1]);
        }
        payload.extend(random_message(&mut rng));
        let _ = s.write_all(&payload);
        sent += 1;
    }
    sent
}

#[test]
fn garbage_on_the_wire_leaves_gcs_and_raylet_serving() {
    let env = RayEnv::new();
    let gcs = env.start_head(&["--num-cpus", "2"]);
    env.start_worker(&["--num-cpus", "1"]);
    let token = env.token();
    let log = std::fs::read_to_string(env.logs_dir().join("raylet.out")).unwrap();
    let raylet = log
        .lines()
        .find(|l| l.contains("raylet registered"))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .expect("raylet address in its log")
        .to_string();
    let before = env.live_processes();

    let deadline = Instant::now() + Duration::from_secs(4);
    let (g, r) = (gcs.clone(), raylet.clone());
    let tcp = std::thread::spawn(move || tcp_garbage(&g, deadline) + tcp_garbage(&r, deadline));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let calls = rt.block_on(async {
        let a = grpc_garbage(&gcs, GCS_METHODS, &token, deadline);
        let b = grpc_garbage(&raylet, RAYLET_METHODS, &token, deadline);
        let (a, b) = tokio::join!(a, b);
        a + b
    });
    let conns = tcp.join().unwrap();
    eprintln!("sent {calls} malformed gRPC calls and {conns} garbage connections");
    assert!(calls > 50 && conns > 50);

    // Still serving, nothing died, nothing panicked.
    let status = env.status();
    assert_eq!(status_node_count(&status), 2, "{status}");
    assert!(status.contains("/3.0 CPU"), "{status}");
    assert_eq!(env.live_processes().len(), before.len());
    let logs = env.all_logs();
    assert!(!logs.contains("panicked"), "a daemon panicked:\n{logs}");
}
