//! The blob layer against a real S3-protocol server: moto's server (`python3 -m moto.server`) on loopback (installed by
//! `.ci/run` with `pip install 'moto[server]'`). Upload, replicate to three regional buckets, verify, then
//! corrupt one regional chunk and repair it.

use cascade_client::blobs::{
    check_chunks, open_store, read_manifest, replicate, upload_file, upload_file_multipart, StoreConfig, UploadOptions,
    VerifyMode,
};
use object_store::path::Path as Key;
use object_store::{ObjectStoreExt, PutPayload};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_moto() -> (Moto, String) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // `python3 -m moto.server` works whether or not pip's script directory is on PATH.
    let binary = std::env::var("CASCADE_PYTHON").unwrap_or_else(|_| "python3".into());
    let child = Command::new(&binary)
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {binary} -m moto.server ({e}): install it with `pip install 'moto[server]'`")
        });
    let moto = Moto(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto's server did not listen on {port} within 30 s (is it installed? `pip install 'moto[server]'`)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (moto, format!("http://127.0.0.1:{port}"))
}

/// Bucket `cascade-<name>` (S3 bucket names need at least 3 characters).
fn s3(endpoint: &str, name: &str) -> StoreConfig {
    StoreConfig::S3 {
        bucket: format!("cascade-{name}"),
        endpoint: Some(endpoint.into()),
        region: "us-east-1".into(),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        allow_http: true,
    }
}

async fn create_bucket(endpoint: &str, bucket: &str) {
    let response = reqwest::Client::new().put(format!("{endpoint}/{bucket}")).send().await.expect("create bucket");
    assert!(response.status().is_success(), "create bucket {bucket}: {}", response.status());
}

/// Deterministic pseudo-random bytes (BLAKE3 in XOF mode), so chunks do not deduplicate.
fn random_bytes(len: usize, seed: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    blake3::Hasher::new().update(seed).finalize_xof().fill(&mut bytes);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_replicate_verify_and_repair_on_s3() {
    let (_moto, endpoint) = start_moto();
    for bucket in ["main", "us", "eu", "ap"] {
        create_bucket(&endpoint, &format!("cascade-{bucket}")).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let artifact = dir.path().join("artifact.bin");
    let bytes = random_bytes(5 * 1024 * 1024 + 12_345, b"s3 test");
    std::fs::write(&artifact, &bytes).unwrap();

    let main = open_store(&s3(&endpoint, "main")).unwrap();
    let options = UploadOptions { chunk_size: 1024 * 1024, concurrency: 3 };
    let manifest = upload_file(&main, &artifact, options).await.expect("upload to S3");
    assert_eq!(manifest.total_size, bytes.len() as u64);
    assert_eq!(manifest.chunk_count(), 6);
    assert_eq!(manifest.digest, cascade_core::manifest::hash_bytes(&bytes));
    assert_eq!(read_manifest(&main, &manifest.digest).await.unwrap().as_ref(), Some(&manifest));

    for region in ["us", "eu", "ap"] {
        let store = open_store(&s3(&endpoint, region)).unwrap();
        let before = check_chunks(&store, &manifest, VerifyMode::Hash, 4).await.unwrap();
        assert_eq!((before.chunks_ok, before.missing.len(), before.manifest_ok), (0, 6, false));
        let report = replicate(&main, &store, &manifest, VerifyMode::Hash, 4).await.expect("replicate");
        assert_eq!((report.copied, report.skipped), (6, 0));
        let after = check_chunks(&store, &manifest, VerifyMode::Hash, 4).await.unwrap();
        assert!(after.complete(), "{region}: {after:?}");
        // Resumable: a second run copies nothing.
        let again = replicate(&main, &store, &manifest, VerifyMode::Hash, 4).await.unwrap();
        assert_eq!((again.copied, again.skipped), (0, 6));
    }

    // Same-size corruption in one region: a size check misses it, a hash check finds it, a copy repairs it.
    let eu = open_store(&s3(&endpoint, "eu")).unwrap();
    let key = Key::from(cascade_core::Manifest::chunk_key(&manifest.chunks[2]));
    let mut chunk = eu.get(&key).await.unwrap().bytes().await.unwrap().to_vec();
    chunk[77] ^= 0x01;
    eu.put(&key, PutPayload::from(chunk)).await.unwrap();
    assert!(check_chunks(&eu, &manifest, VerifyMode::Size, 4).await.unwrap().complete());
    let found = check_chunks(&eu, &manifest, VerifyMode::Hash, 4).await.unwrap();
    assert_eq!(found.corrupt, vec![2]);
    let repair = replicate(&main, &eu, &manifest, VerifyMode::Hash, 4).await.unwrap();
    assert_eq!(repair.copied, 1);
    assert!(check_chunks(&eu, &manifest, VerifyMode::Hash, 4).await.unwrap().complete());

    // A corrupt source chunk is refused, never spread.
    let main_key = Key::from(cascade_core::Manifest::chunk_key(&manifest.chunks[0]));
    main.put(&main_key, PutPayload::from(vec![0u8; 1024 * 1024])).await.unwrap();
    let fresh = open_store(&s3(&endpoint, "fresh")).unwrap();
    create_bucket(&endpoint, "cascade-fresh").await;
    let err = replicate(&main, &fresh, &manifest, VerifyMode::Hash, 4).await.expect_err("corrupt source");
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert!(read_manifest(&fresh, &manifest.digest).await.unwrap().is_none(), "no manifest for an incomplete copy");

    // Logs go up as one multipart object.
    let log = dir.path().join("build.log");
    std::fs::write(&log, random_bytes(11 * 1024 * 1024, b"log")).unwrap();
    let sent = upload_file_multipart(&main, &log, "logs/1/attempt-1.log").await.expect("multipart upload");
    assert_eq!(sent, 11 * 1024 * 1024);
    let meta = main.head(&Key::from("logs/1/attempt-1.log")).await.unwrap();
    assert_eq!(meta.size, sent);
}

#[tokio::test]
async fn an_unreachable_store_is_a_clear_error() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = open_store(&s3(&format!("http://127.0.0.1:{port}"), "nowhere")).unwrap();
    let digest = cascade_core::manifest::hash_bytes(b"x");
    let err = read_manifest(&store, &digest).await.expect_err("nothing listens there");
    assert!(err.to_string().contains(&format!("manifests/{digest}.json")), "{err}");
}
