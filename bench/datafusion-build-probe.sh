#!/usr/bin/env bash
# Build-cost probe for issue #4: a scratch crate (outside the repo) that depends on DataFusion
# with the features Logbook's query engine needs, and the per-package release profile this
# project intends to use. Prints cargo's wall time and the slowest crates.
#
#   bench/datafusion-build-probe.sh [scratch-dir]
set -euo pipefail
DIR="${1:-$(mktemp -d /tmp/df-probe.XXXXXX)}"
mkdir -p "$DIR/src"
cat > "$DIR/Cargo.toml" <<'TOML'
[package]
name = "df-probe"
version = "0.1.0"
edition = "2021"

[dependencies]
datafusion = { version = "55", default-features = false, features = ["sql", "parquet", "regex_expressions", "string_expressions", "unicode_expressions", "datetime_expressions", "nested_expressions", "math_expressions"] }
tokio = { version = "1", features = ["rt", "macros"] }

[profile.release]
debug = false

[profile.release.package.datafusion]
opt-level = 0
[profile.release.package.datafusion-catalog]
opt-level = 0
[profile.release.package.datafusion-sql]
opt-level = 0
[profile.release.package.sqlparser]
opt-level = 0
[profile.release.package.datafusion-optimizer]
opt-level = 1
[profile.release.package.datafusion-expr]
opt-level = 1
TOML
cat > "$DIR/src/main.rs" <<'RS'
use datafusion::prelude::*;

#[tokio::main(flavor = "current_thread")]
async fn main() -> datafusion::error::Result<()> {
    let ctx = SessionContext::new();
    ctx.sql("select 1 as x, regexp_like('abc', 'b') as r, strpos('abc','c') as p").await?.show().await?;
    let _ = ctx.read_parquet("missing.parquet", ParquetReadOptions::default()).await;
    Ok(())
}
RS
cd "$DIR"
start=$(date +%s)
cargo build --release --timings
echo "cold release build: $(( $(date +%s) - start )) s (in $DIR)"
python3 - <<'PY'
import json, re
h = open("target/cargo-timings/cargo-timing.html").read()
units = json.loads(re.search(r"const UNIT_DATA = (\[.*?\]);", h, re.S).group(1))
for u in sorted(units, key=lambda u: -u["duration"])[:12]:
    print(f"{u['duration']:7.1f}s  {u['name']}")
PY
