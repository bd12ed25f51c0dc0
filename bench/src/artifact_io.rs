//! `artifact-io`: upload and replication throughput of Cascade's blob layer on local disk, each as a ratio to
//! `cp` of the same bytes on the same disk in the same run.
//!
//! ```text
//! cargo run --release -p cascade-bench --bin artifact-io -- --size-mib 2048 --regions 5
//! ```
//!
//! Steps: write a file of random bytes; `cp` it once (the baseline); upload it as chunks + manifest into a
//! `main` directory store (hashing every chunk and the whole file, as the worker does); `cp` it into N
//! directories in parallel; replicate main → N regional directory stores in parallel (reading, verifying and
//! writing every chunk, as the leader's replicator does). Everything runs through the page cache, like `cp`.

use cascade_client::blobs::{open_store, replicate, upload_file, StoreConfig, UploadOptions, VerifyMode};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// Artifact size in MiB.
    #[arg(long, default_value_t = 2048)]
    size_mib: u64,
    /// Regional stores to replicate into.
    #[arg(long, default_value_t = 5)]
    regions: usize,
    /// Chunk sizes to try for the upload, in MiB (the first is used for replication).
    #[arg(long, value_delimiter = ',', default_value = "16,4,64")]
    chunk_mib: Vec<u64>,
    /// Upload and replication concurrency.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Scratch directory (on the disk to measure); a temporary directory by default.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn mib_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / secs
}

fn cp(from: &Path, to: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("cp").arg(from).arg(to).status()?;
    anyhow::ensure!(status.success(), "cp failed");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let scratch = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let root = scratch.path();
    let size = args.size_mib * 1024 * 1024;
    let source = root.join("artifact.bin");
    {
        use std::io::Write as _;
        let mut reader = blake3::Hasher::new().update(b"artifact-io").finalize_xof();
        let mut file = std::io::BufWriter::new(std::fs::File::create(&source)?);
        let mut block = vec![0u8; 4 * 1024 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            reader.fill(&mut block[..n]);
            file.write_all(&block[..n])?;
            left -= n as u64;
        }
        file.flush()?;
    }
    println!("artifact: {} MiB of random bytes in {}", args.size_mib, root.display());

    let started = Instant::now();
    cp(&source, &root.join("cp-once.bin"))?;
    let cp_secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(root.join("cp-once.bin"))?;
    println!("cp, one copy:                 {cp_secs:7.2} s  {:8.1} MiB/s", mib_per_s(size, cp_secs));

    let mut main_store = None;
    let mut manifest = None;
    for (i, chunk_mib) in args.chunk_mib.iter().enumerate() {
        let dir = root.join(format!("main-{chunk_mib}"));
        let store = open_store(&StoreConfig::Local { path: dir.clone() })?;
        let options = UploadOptions { chunk_size: chunk_mib * 1024 * 1024, concurrency: args.concurrency };
        let started = Instant::now();
        let uploaded = upload_file(&store, &source, options).await?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "upload, {chunk_mib:>3} MiB chunks:      {secs:7.2} s  {:8.1} MiB/s  {:.2} × cp",
            mib_per_s(size, secs),
            secs / cp_secs
        );
        if i == 0 {
            main_store = Some(store);
            manifest = Some(uploaded);
        } else {
            std::fs::remove_dir_all(dir)?;
        }
    }
    let (main_store, manifest) = (main_store.expect("one chunk size"), manifest.expect("one upload"));

    let started = Instant::now();
    let copies: Vec<_> = (0..args.regions)
        .map(|r| {
            let (from, to) = (source.clone(), root.join(format!("cp-{r}.bin")));
            std::thread::spawn(move || cp(&from, &to))
        })
        .collect();
    for copy in copies {
        copy.join().map_err(|_| anyhow::anyhow!("cp thread panicked"))??;
    }
    let cp_fanout_secs = started.elapsed().as_secs_f64();
    for r in 0..args.regions {
        std::fs::remove_file(root.join(format!("cp-{r}.bin")))?;
    }
    let total = size * args.regions as u64;
    println!(
        "cp into {} dirs, parallel:      {cp_fanout_secs:7.2} s  {:8.1} MiB/s",
        args.regions,
        mib_per_s(total, cp_fanout_secs)
    );

    let regions: Vec<_> = (0..args.regions)
        .map(|r| open_store(&StoreConfig::Local { path: root.join(format!("region-{r}")) }))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let results = futures::future::join_all(
        regions.iter().map(|region| replicate(&main_store, region, &manifest, VerifyMode::Hash, args.concurrency)),
    )
    .await;
    let secs = started.elapsed().as_secs_f64();
    for result in results {
        result?;
    }
    println!(
        "replicate main → {} regions:   {secs:7.2} s  {:8.1} MiB/s  {:.2} × cp",
        args.regions,
        mib_per_s(total, secs),
        secs / cp_fanout_secs
    );
    Ok(())
}
