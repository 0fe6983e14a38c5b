//! `logbook`: the flight recorder for AI model calls.

use anyhow::Context;

/// jemalloc: with the options in `.cargo/config.toml` it gives freed pages back to the
/// system within half a second, where glibc's per-thread arenas held a steady `serve` about
/// 50 MB higher (mimalloc was tried too; BENCHMARKS.md, resident memory).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

mod coverage_cmd;
mod demo_cmd;
mod gunzip;
mod query_cmd;
mod report_cmd;
mod status_cmd;
mod verify_cmd;

/// Hand jemalloc's freed pages back to the system now, in every arena. The store calls it
/// after a flush and while a merge streams (`Store::set_release_memory`): with the 500 ms
/// decay above, a merge of the open hour's files held the pages it had freed until it
/// ended, and those made `serve`'s resident peak (BENCHMARKS.md, "Resident memory").
/// A decay of 0 would do it on every free, and cost the gateway a fifth more CPU per call.
#[allow(unsafe_code)]
fn purge_freed_pages() {
    // `MALLCTL_ARENAS_ALL` (4096) stands for every arena.
    const NAME: &[u8] = b"arena.4096.purge\0";
    // SAFETY: a NUL-terminated name of a control that reads and writes nothing (null
    // pointers and length 0, as jemalloc's manual says for `arena.<i>.purge`); it fails
    // only by returning an error code, which changes nothing and is ignored.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            NAME.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

/// How long `logbook import` lets jemalloc keep the pages it frees (`serve` keeps them
/// 500 ms, `.cargo/config.toml`). An import frees and takes again the same sizes a
/// thousand times a second (batches of columns, Parquet pages, decompressed objects):
/// with 500 ms, much of it came back as fresh pages the kernel had to zero and map,
/// about a sixth of the import's CPU in system time (BENCHMARKS.md, "The import's
/// allocator").
const IMPORT_DECAY_MS: isize = 10_000;

/// Sets jemalloc's dirty and muzzy decay to `ms` in every arena there is and every arena
/// made later, the arena of huge allocations (over 8 MiB) among them. jemalloc makes that
/// one at the first huge allocation, with no decay whatever the default ("few, and seldom
/// reused"); an import's columns grow past 8 MiB in every batch it writes, and with
/// their pages purged at once it spent 6 % of its CPU faulting in fresh ones (3.6 % in
/// copying rows into its columns). So one huge allocation is made here first, and the
/// arena it makes is set with the others.
#[allow(unsafe_code)]
fn keep_freed_pages_for(ms: isize) {
    fn set(name: &str, mut value: isize) {
        let name = format!("{name}\0");
        // SAFETY: a NUL-terminated name of a control whose value is an `ssize_t`
        // (jemalloc's manual: `arenas.dirty_decay_ms`, `arena.<i>.dirty_decay_ms` and the
        // muzzy ones), written from a live `isize` of that size; nothing is read back. An
        // arena not yet made answers an error code, which changes nothing (it takes the
        // default set first).
        unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr().cast(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                (&mut value as *mut isize).cast(),
                std::mem::size_of::<isize>(),
            );
        }
    }
    set("arenas.dirty_decay_ms", ms);
    set("arenas.muzzy_decay_ms", ms);
    drop(std::hint::black_box(vec![1u8; HUGE_ALLOCATION]));
    let Some(arenas) = read_unsigned(c"arenas.narenas") else {
        return;
    };
    for i in 0..arenas {
        set(&format!("arena.{i}.dirty_decay_ms"), ms);
        set(&format!("arena.{i}.muzzy_decay_ms"), ms);
    }
}

/// Bytes over jemalloc's `oversize_threshold` (8 MiB, its default): an allocation served
/// by the arena of huge allocations.
const HUGE_ALLOCATION: usize = 9 << 20;

/// A jemalloc control whose value is an `unsigned` (`arenas.narenas`, `thread.arena`).
#[allow(unsafe_code)]
fn read_unsigned(name: &std::ffi::CStr) -> Option<std::ffi::c_uint> {
    let mut value: std::ffi::c_uint = 0;
    let mut len = std::mem::size_of::<std::ffi::c_uint>();
    // SAFETY: a NUL-terminated name of an `unsigned` control, read into a live `c_uint`
    // whose size is passed in `len`; nothing is written.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            (&mut value as *mut std::ffi::c_uint).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    (rc == 0).then_some(value)
}

/// `logbook --version`: the package version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("LOGBOOK_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "logbook",
    version = VERSION,
    about = "Records every AI model call as a Bedrock invocation log"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: Bedrock runtime + OpenAI APIs, journal, archive delivery.
    Serve(ServeArgs),
    /// Check a configuration file without starting anything.
    Validate {
        /// The TOML file.
        config: PathBuf,
        /// Check the file only; do not contact S3 buckets and CloudWatch Logs endpoints.
        #[arg(long)]
        offline: bool,
    },
    /// List control-plane audit events (CloudTrail format), newest last.
    Trail(TrailArgs),
    /// A running server's health and delivery per destination (exit 1 unless "ok").
    Status {
        /// The server's base URL.
        #[arg(long, env = "LOGBOOK_URL", default_value = "http://127.0.0.1:4700")]
        url: String,
        /// Output format.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
    /// A server with embedded defaults filled with a realistic burst of traffic through its
    /// own gateway (teams, apps, models, streams, errors, throttles, a budget warning, an
    /// alarm); prints the console's address and a sign-in key, then keeps serving.
    Demo(demo_cmd::DemoArgs),
    /// Print a shell completion script: `logbook completions bash > /etc/bash_completion.d/logbook`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Coverage: for every account/region, logging on, destinations declared and
    /// delivering (asked of the running server), no drift from the file; alarms on the
    /// metrics that catch failing calls. Exit 1 on any gap (for cron and CI), 2 on trouble.
    Coverage {
        #[command(flatten)]
        data: DataArgs,
        /// The running server's base URL (for delivery health).
        #[arg(long, env = "LOGBOOK_URL", default_value = "http://127.0.0.1:4700")]
        url: String,
        /// Output format.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
        /// A metric that must have an alarm (repeatable; default InvocationClientErrors
        /// and InvocationThrottles).
        #[arg(long = "require-alarm")]
        require_alarm: Vec<String>,
    },
    /// A replica of the cluster home gone for good (crashed, its machine lost): release
    /// its node-id claim on its behalf (refused while it is running), and stop it declaring
    /// budgets and alarms (those only it declared go). Its published records stay
    /// queryable. `logbook coverage` then no longer reports it as lost.
    ForgetReplica {
        #[command(flatten)]
        data: DataArgs,
        /// The node id (as `logbook coverage` lists it).
        node: String,
        /// Output format.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
    /// Query log groups with the Logs Insights language (or SQL with --sql).
    Query(QueryArgs),
    /// Import Bedrock invocation logs (gzipped JSON Lines in Bedrock's S3 layout).
    Import(ImportArgs),
    /// Alarms: their states and recent history (from the data folder).
    Alarms {
        #[command(flatten)]
        data: DataArgs,
        /// History items to show.
        #[arg(long, default_value_t = 30)]
        history: usize,
    },
    /// FinOps reports.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Prove a bucket untouched, offline: every checkpoint's signature and chain, every
    /// object each lists, the Merkle roots recomputed from the lines, and no unlisted
    /// object (exit 1 on any finding). With --proof, check a proof from `logbook prove`.
    Verify(verify_cmd::VerifyArgs),
    /// Print an inclusion proof of one record (or trail event), or a consistency proof
    /// between two checkpoints, for `logbook verify --proof`.
    Prove(verify_cmd::ProveArgs),
    /// Checkpoint signing keys and encryption master keys.
    Keys {
        #[command(subcommand)]
        command: verify_cmd::KeysCommand,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Cost and tokens by period and by team, principal, tag, metadata key, model or
    /// region. Each call counts once: a bare key is the principal tag, else the call's
    /// requestMetadata key of that name.
    Chargeback(ChargebackArgs),
}

#[derive(clap::Args)]
struct ChargebackArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Group by (repeatable or comma-separated): principal, model, region, account, api,
    /// operation, tag:KEY, meta:KEY, or a bare KEY (principal tag, else requestMetadata).
    #[arg(long)]
    by: Vec<String>,
    /// Period length.
    #[arg(long, default_value = "month", value_parser = ["day", "week", "month"])]
    period: String,
    /// IANA time zone the periods are cut in (records stay in UTC).
    #[arg(long, default_value = "UTC")]
    tz: String,
    /// Only calls newer than this (90s, 30m, 24h, 7d, 2w). Default: all.
    #[arg(long, conflicts_with = "start")]
    since: Option<String>,
    /// Only calls at or after this time (RFC 3339, or a date).
    #[arg(long)]
    start: Option<String>,
    /// Only calls at or before this time (RFC 3339, or a date).
    #[arg(long)]
    end: Option<String>,
    /// Output: an aligned table, CSV, JSON, an HTML page, or FOCUS 1.0 CSV.
    #[arg(long, default_value = "table", value_parser = ["table", "csv", "json", "html", "focus"])]
    format: String,
    /// Log group to read (repeatable). Default: every log group.
    #[arg(long = "log-group")]
    log_groups: Vec<String>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Report where the logging configuration in force differs from the file (exit 1 on drift).
    Diff(DataArgs),
}

#[derive(clap::Args)]
struct DataArgs {
    /// Data folder.
    #[arg(long, env = "LOGBOOK_DATA_DIR", default_value = "./logbook-data")]
    data_dir: PathBuf,
    /// Configuration file.
    #[arg(long, env = "LOGBOOK_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
struct TrailArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Only events newer than this (90s, 30m, 24h, 7d, 2w).
    #[arg(long, conflicts_with = "start")]
    since: Option<String>,
    /// Only events at or after this time (RFC 3339, or a date: 2026-11-19).
    #[arg(long)]
    start: Option<String>,
    /// Only events before this time (RFC 3339, or a date: 2026-11-20).
    #[arg(long)]
    end: Option<String>,
    /// Only this eventName, e.g. PutModelInvocationLoggingConfiguration.
    #[arg(long)]
    event_name: Option<String>,
    /// Only this principal ARN (a trailing * matches a prefix).
    #[arg(long)]
    principal: Option<String>,
    /// Only management events (changes, control-plane reads) or data events (every read
    /// of records: queries, log-event reads, record fetches, reports).
    #[arg(long, value_parser = ["management", "data"])]
    category: Option<String>,
    /// Output format.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    format: String,
}

#[derive(clap::Args)]
struct QueryArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Log group to read (repeatable).
    #[arg(long = "log-group", default_value = "/aws/bedrock/modelinvocations")]
    log_groups: Vec<String>,
    /// Only records newer than this (90s, 30m, 24h, 7d, 2w). Default: all.
    #[arg(long, conflicts_with = "start")]
    since: Option<String>,
    /// Only records at or after this time (RFC 3339, or a date: 2026-11-19).
    #[arg(long)]
    start: Option<String>,
    /// Only records at or before this time (RFC 3339, or a date).
    #[arg(long)]
    end: Option<String>,
    /// The query is SQL (tables `invocations` and `archive`).
    #[arg(long)]
    sql: bool,
    /// Output format.
    #[arg(long, default_value = "table", value_parser = ["table", "json", "csv"])]
    format: String,
    /// At most this many rows.
    #[arg(long, default_value_t = 10_000)]
    limit: usize,
    /// The query, e.g. 'stats sum(inputTokenCount) by modelId'.
    query: String,
}

#[derive(clap::Args)]
struct ImportArgs {
    #[command(flatten)]
    data: DataArgs,
    /// A folder, or s3://bucket/prefix of a bucket declared in the configuration.
    source: String,
    /// The log group to fill (created if missing).
    #[arg(long = "log-group", default_value = "/aws/bedrock/modelinvocations")]
    log_group: String,
}

/// `--since` / `--start` / `--end` as an epoch-ms range (all time when none is given).
fn time_range(
    since: &Option<String>,
    start: &Option<String>,
    end: &Option<String>,
) -> anyhow::Result<(i64, i64)> {
    let ms = |t: time::OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
    let mut from = i64::MIN / 2;
    if let Some(s) = since {
        from = ms(time::OffsetDateTime::now_utc() - logbook_server::tools::parse_since(s)?);
    }
    if let Some(t) = start {
        from = ms(logbook_server::tools::parse_instant(t)?);
    }
    let to = match end {
        Some(t) => ms(logbook_server::tools::parse_instant(t)?),
        None => i64::MAX / 2,
    };
    Ok((from, to))
}

fn load_data(args: &DataArgs) -> anyhow::Result<logbook_server::Config> {
    Ok(match &args.config {
        Some(p) => logbook_server::Config::load(p, &args.data_dir)?,
        None => logbook_server::Config::defaults(&args.data_dir)?,
    })
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "LOGBOOK_LISTEN")]
    listen: Option<String>,
    /// Data folder: journal, archive bucket, node id.
    #[arg(long, env = "LOGBOOK_DATA_DIR", default_value = "./logbook-data")]
    data_dir: PathBuf,
    /// Configuration file (TOML). Without it: mock provider, strict logging, local archive.
    #[arg(long, env = "LOGBOOK_CONFIG")]
    config: Option<PathBuf>,
    /// Override logging.mode: strict (respond after fsync) or async.
    #[arg(long, value_parser = ["strict", "async"])]
    mode: Option<String>,
    /// Override archive.max_object_age_ms (how long records wait before an archive object is
    /// written); it also caps archive.parquet_max_object_age_ms and otlp.export_interval_ms.
    #[arg(long)]
    archive_max_age_ms: Option<u64>,
}

fn load(args: &ServeArgs) -> anyhow::Result<logbook_server::Config> {
    let mut config = match &args.config {
        Some(p) => logbook_server::Config::load(p, &args.data_dir)?,
        None => logbook_server::Config::defaults(&args.data_dir)?,
    };
    if let Some(l) = &args.listen {
        config.listen = l.clone();
    }
    match args.mode.as_deref() {
        Some("async") => config.mode = logbook_server::config::LoggingMode::Async,
        Some("strict") => config.mode = logbook_server::config::LoggingMode::Strict,
        _ => {}
    }
    if let Some(ms) = args.archive_max_age_ms {
        config.max_object_age = std::time::Duration::from_millis(ms);
        config.parquet_max_object_age = config.parquet_max_object_age.min(config.max_object_age);
        if let Some(o) = &mut config.otlp {
            o.export_interval = o.export_interval.min(config.max_object_age);
        }
    }
    Ok(config)
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOGBOOK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Validate { config, offline } => {
            let c = logbook_server::Config::load(&config, std::path::Path::new("."))?;
            // What `serve` builds from the file besides: providers (with their credentials)
            // and routes. A file that validates must also start.
            logbook_server::routing::Routes::new(&c)?;
            if !offline {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let problems = rt.block_on(logbook_server::tools::check_remotes(&c));
                if !problems.is_empty() {
                    anyhow::bail!(
                        "{}: the destinations cannot be reached as declared:\n  - {}",
                        config.display(),
                        problems.join("\n  - ")
                    );
                }
            }
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::Status { url, format } => {
            let h = status_cmd::fetch(&url)?;
            if format == "json" {
                println!("{}", serde_json::to_string_pretty(&h)?);
            } else {
                print!("{}", status_cmd::render(&h));
            }
            if h.get("status").and_then(serde_json::Value::as_str) != Some("ok") {
                anyhow::bail!("the server is not ok");
            }
            Ok(())
        }
        Command::Demo(args) => demo_cmd::run(args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "logbook", &mut std::io::stdout());
            Ok(())
        }
        Command::Coverage {
            data,
            url,
            format,
            require_alarm,
        } => {
            let trouble = |e: &dyn std::fmt::Display| -> ! {
                let _ = writeln!(std::io::stderr(), "logbook: {e}");
                std::process::exit(2)
            };
            let config = load_data(&data).unwrap_or_else(|e| trouble(&format!("{e:#}")));
            let metrics = if require_alarm.is_empty() {
                coverage_cmd::DEFAULT_ALARM_METRICS
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            } else {
                require_alarm
            };
            let health = status_cmd::fetch(&url).map_err(|e| format!("{e:#}"));
            // Replicas: every claim in the cluster home.
            let replicas = config.cluster.as_ref().map(|c| {
                let spec = config
                    .buckets
                    .get(&c.home)
                    .ok_or_else(|| format!("cluster.home {:?} is not declared", c.home))?;
                let home =
                    logbook_bucket::Bucket::open(&c.home, spec, logbook_disk::RealDisk::shared())
                        .map_err(|e| e.to_string())?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(logbook_cluster::claim::replicas(&home))
            });
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let c = coverage_cmd::check(&config, health, &metrics, replicas, now_ms)
                .unwrap_or_else(|e| trouble(&format!("{e:#}")));
            let mut out = std::io::stdout();
            if format == "json" {
                writeln!(out, "{}", serde_json::to_string_pretty(&c)?)?;
            } else {
                write!(out, "{}", coverage_cmd::render(&c))?;
            }
            out.flush()?;
            if !c.gaps.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::ForgetReplica { data, node, format } => {
            let config = load_data(&data)?;
            let c = config
                .cluster
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("the configuration has no [cluster] home"))?;
            let spec = config
                .buckets
                .get(&c.home)
                .ok_or_else(|| anyhow::anyhow!("cluster.home {:?} is not declared", c.home))?;
            let home =
                logbook_bucket::Bucket::open(&c.home, spec, logbook_disk::RealDisk::shared())
                    .map_err(|e| anyhow::anyhow!("cluster home {}: {e}", c.home))?;
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let done = rt
                .block_on(logbook_server::cluster::forget(
                    &home,
                    &node,
                    c.claim_ttl,
                    now_ms,
                ))
                .map_err(anyhow::Error::msg)?;
            let mut out = std::io::stdout();
            if format == "json" {
                writeln!(out, "{}", serde_json::to_string_pretty(&done)?)?;
            } else {
                writeln!(
                    out,
                    "replica {} ({}) {}; budgets gone: {}; alarms gone: {}",
                    done.node,
                    done.last_holder,
                    if done.was_released {
                        "had stopped cleanly"
                    } else {
                        "released on its behalf"
                    },
                    if done.budgets_gone.is_empty() {
                        "none".to_string()
                    } else {
                        done.budgets_gone.join(", ")
                    },
                    if done.alarms_gone.is_empty() {
                        "none".to_string()
                    } else {
                        done.alarms_gone.join(", ")
                    }
                )?;
            }
            Ok(())
        }
        Command::Trail(args) => {
            let config = load_data(&args.data)?;
            let since = match &args.since {
                Some(s) => {
                    Some(time::OffsetDateTime::now_utc() - logbook_server::tools::parse_since(s)?)
                }
                None => None,
            };
            let since = match &args.start {
                Some(t) => Some(logbook_server::tools::parse_instant(t)?),
                None => since,
            };
            let until = match &args.end {
                Some(t) => Some(logbook_server::tools::parse_instant(t)?),
                None => None,
            };
            let filter = logbook_server::tools::TrailFilter {
                since,
                until,
                event_name: args.event_name.clone(),
                principal: args.principal.clone(),
                category: args.category.clone(),
            };
            let events = logbook_server::tools::trail_events(&config, &filter)?;
            let mut out = std::io::stdout();
            if args.format == "json" {
                for e in &events {
                    writeln!(out, "{e}")?;
                }
            } else {
                write!(out, "{}", logbook_server::tools::trail_table(&events))?;
            }
            Ok(())
        }
        Command::Query(args) => {
            let config = load_data(&args.data)?;
            let (start, end) = time_range(&args.since, &args.start, &args.end)?;
            query_cmd::query(
                &config,
                args.log_groups,
                start,
                end,
                args.sql,
                &args.format,
                args.limit,
                &args.query,
            )
        }
        Command::Alarms { data, history } => {
            let config = load_data(&data)?;
            let text = logbook_server::alarms::report(&config.data_dir, history)
                .map_err(anyhow::Error::msg)?;
            print!("{text}");
            Ok(())
        }
        Command::Report {
            command: ReportCommand::Chargeback(args),
        } => {
            let config = load_data(&args.data)?;
            let (start, end) = time_range(&args.since, &args.start, &args.end)?;
            report_cmd::chargeback(
                &config,
                report_cmd::Args {
                    by: args.by,
                    period: args.period,
                    tz: args.tz,
                    start_ms: start,
                    end_ms: end,
                    format: args.format,
                    groups: args.log_groups,
                },
            )
        }
        Command::Import(args) => {
            let config = load_data(&args.data)?;
            keep_freed_pages_for(IMPORT_DECAY_MS);
            query_cmd::import(&config, &args.source, &args.log_group)
        }
        Command::Config {
            command: ConfigCommand::Diff(args),
        } => {
            // As diff(1): 0 no drift, 1 drift, 2 trouble (a missing or invalid file is not drift).
            let trouble = |e: &dyn std::fmt::Display| -> ! {
                let _ = writeln!(std::io::stderr(), "logbook: {e}");
                std::process::exit(2)
            };
            let config = load_data(&args).unwrap_or_else(|e| trouble(&format!("{e:#}")));
            let drift = logbook_server::control::LoggingConfigs::diff_stored(
                &config.data_dir.join("control"),
                &config.logging_default,
                &config.logging_declared,
            )
            .unwrap_or_else(|e| trouble(&e));
            let mut out = std::io::stdout();
            if drift.is_empty() {
                writeln!(
                    out,
                    "no drift: the logging configuration in force matches the file"
                )?;
                return Ok(());
            }
            for d in &drift {
                writeln!(out, "drift in {}/{}:", d.account_id, d.region)?;
                writeln!(
                    out,
                    "  file declares: {}",
                    serde_json::to_string(&d.declared)?
                )?;
                match &d.live {
                    Some(l) => writeln!(out, "  in force:      {}", serde_json::to_string(l)?)?,
                    None => writeln!(out, "  in force:      (deleted: logging is off)")?,
                }
            }
            out.flush()?;
            std::process::exit(1);
        }
        Command::Verify(args) => verify_cmd::verify(args),
        Command::Prove(args) => verify_cmd::prove(args),
        Command::Keys { command } => verify_cmd::keys_cmd(command),
        Command::Serve(args) => {
            let mut config = load(&args)?;
            config.release_memory = Some(logbook_server::config::ReleaseMemory(
                std::sync::Arc::new(purge_freed_pages),
            ));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("start runtime")?;
            let data_dir = config.data_dir.clone();
            rt.block_on(logbook_server::serve(config, |addr, admin| {
                let mut out = std::io::stdout();
                let _ = writeln!(out, "listening on http://{addr}");
                if let Some(a) = admin {
                    // Printed once, on the run that created it; kept in the data folder.
                    let _ = writeln!(
                        out,
                        "\nGenerated admin credentials (saved in {}):",
                        data_dir.join("admin-credentials.json").display()
                    );
                    let _ = writeln!(out, "  AWS_ACCESS_KEY_ID={}", a.access_key_id);
                    let _ = writeln!(out, "  AWS_SECRET_ACCESS_KEY={}", a.secret_access_key);
                    let _ = writeln!(out, "  OPENAI_API_KEY={}", a.api_key);
                    let _ = writeln!(out, "  principal: {}\n", a.arn);
                }
                let _ = out.flush();
            }))?;
            Ok(())
        }
    }
}

/// Everything Logbook writes holds prompts, answers or credentials: files are created
/// 0600 and folders 0700 (owner only), whatever the umask of the shell that started it.
fn private_files() {
    #[cfg(unix)]
    {
        rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    }
}

/// An error and its causes, `: `-joined, each said once: a message that already ends
/// with its cause's text (`parquet: External: No space left on device`) is not followed
/// by that cause again.
fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for c in e.chain() {
        let s = c.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

fn main() -> ExitCode {
    private_files();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: it panics when stderr cannot be written (e.g. a full disk).
            let _ = writeln!(std::io::stderr(), "logbook: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// Resident anonymous memory of this process, in KiB.
    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[allow(unsafe_code)]
    fn decay_ms(name: &str) -> isize {
        let name = format!("{name}\0");
        let mut value: isize = -2;
        let mut len = std::mem::size_of::<isize>();
        // SAFETY: an `ssize_t` control read into a live `isize` of the size passed.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr().cast(),
                (&mut value as *mut isize).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(rc, 0, "{name}");
        value
    }

    /// The import's decay reaches the arenas that exist and the ones made after it; what
    /// `.cargo/config.toml` compiles in (500 ms, muzzy 0) is what it replaces.
    #[test]
    fn an_import_keeps_freed_pages_longer_in_every_arena() {
        // An arena for this thread, made before the change.
        drop(std::hint::black_box(vec![1u8; 4096]));
        assert_eq!(decay_ms("arenas.dirty_decay_ms"), 500);
        assert_eq!(decay_ms("arenas.muzzy_decay_ms"), 0);
        assert_eq!(decay_ms("arena.0.dirty_decay_ms"), 500);
        super::keep_freed_pages_for(super::IMPORT_DECAY_MS);
        for name in [
            "arenas.dirty_decay_ms",
            "arenas.muzzy_decay_ms",
            "arena.0.dirty_decay_ms",
            "arena.0.muzzy_decay_ms",
        ] {
            assert_eq!(decay_ms(name), 10_000, "{name}");
        }
        // A thread made after it allocates from an arena with the new decay (a new
        // arena takes the default set above; an existing one was set in the loop).
        let got = std::thread::spawn(|| {
            let v = std::hint::black_box(vec![2u8; 4096]);
            assert_eq!(v.len(), 4096);
            let arena = super::read_unsigned(c"thread.arena").unwrap();
            (
                decay_ms(&format!("arena.{arena}.dirty_decay_ms")),
                decay_ms(&format!("arena.{arena}.muzzy_decay_ms")),
            )
        })
        .join()
        .unwrap();
        assert_eq!(got, (10_000, 10_000));
        // And a huge allocation's arena (made by the change, not by jemalloc later).
        let huge = std::hint::black_box(vec![3u8; super::HUGE_ALLOCATION]);
        let arena = arena_of(huge.as_ptr());
        assert_ne!(arena, 0, "a huge allocation came from arena 0");
        assert_eq!(decay_ms(&format!("arena.{arena}.dirty_decay_ms")), 10_000);
        assert_eq!(decay_ms(&format!("arena.{arena}.muzzy_decay_ms")), 10_000);
    }

    /// The arena an allocation came from (`arenas.lookup`).
    #[allow(unsafe_code)]
    fn arena_of(p: *const u8) -> std::ffi::c_uint {
        let mut ptr = p.cast::<std::ffi::c_void>();
        let mut arena: std::ffi::c_uint = u32::MAX;
        let mut len = std::mem::size_of::<std::ffi::c_uint>();
        // SAFETY: `arenas.lookup` reads a pointer (written from a live `*const c_void`
        // of the size passed) and answers an `unsigned` into a live `c_uint` whose size
        // is in `len`; `p` is a live allocation of this allocator.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"arenas.lookup".as_ptr(),
                (&mut arena as *mut std::ffi::c_uint).cast(),
                &mut len,
                (&mut ptr as *mut *const std::ffi::c_void).cast(),
                std::mem::size_of::<*const std::ffi::c_void>(),
            )
        };
        assert_eq!(rc, 0);
        arena
    }

    /// Pages freed in small pieces (which jemalloc keeps for its 0.5 s decay) are handed
    /// back by the purge at once. (Large allocations are not the test: jemalloc returns
    /// those at once anyway.) jemalloc's background thread is stopped first: while it
    /// decays, it takes the pages it will purge out of the arena, and a purge that runs
    /// meanwhile finds them gone and returns before they are (this test failed about one
    /// run in ten so, with 44 of its 64 MiB still resident).
    #[test]
    #[allow(unsafe_code)]
    fn purge_hands_freed_pages_back_at_once() {
        let mut off = false;
        // SAFETY: a `bool` control written from a live `bool` of the size passed.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"background_thread".as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                (&mut off as *mut bool).cast(),
                std::mem::size_of::<bool>(),
            )
        };
        assert_eq!(rc, 0);
        let before = rss_anon_kib();
        let pieces: Vec<Vec<u8>> = (0..16_384).map(|i| vec![i as u8; 4096]).collect();
        let held = rss_anon_kib();
        assert!(held >= before + 48 * 1024, "{before} -> {held} KiB");
        drop(pieces);
        super::purge_freed_pages();
        let after = rss_anon_kib();
        assert!(
            after + 48 * 1024 <= held,
            "held {held} KiB, {after} KiB after the purge"
        );
    }

    /// A cause whose text its error already holds is said once.
    #[test]
    fn an_error_chain_says_each_cause_once() {
        let io = std::io::Error::from_raw_os_error(28);
        let inner = anyhow::Error::from(io).context(format!(
            "External: {}",
            std::io::Error::from_raw_os_error(28)
        ));
        let e = inner.context("writing the import's files");
        assert_eq!(
            super::error_text(&e),
            format!(
                "writing the import's files: External: {}",
                std::io::Error::from_raw_os_error(28)
            )
        );
        assert_eq!(super::error_text(&anyhow::anyhow!("plain")), "plain");
    }
}
