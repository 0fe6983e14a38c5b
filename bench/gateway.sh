#!/usr/bin/env bash
# Gateway overhead benchmark (issue #2): Logbook (strict and async) and LiteLLM's proxy
# in front of the same mock OpenAI-compatible upstream, all on loopback, measured with
# the same open-loop load generator in one run. Prints JSON lines and keeps them in
# bench/out/.
#
#   RATE=1000 DUR=10 RAMP="1000 2000 3000 4000 5000 6000" bench/gateway.sh
#
# LiteLLM comes from PyPI (litellm[proxy]) in ~/.cache/logbook/bench-venv. Its logging is
# on through a custom callback that appends every StandardLoggingPayload to a JSONL file
# (LiteLLM without a database has no spend log of its own).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
RATE="${RATE:-1000}"
DUR="${DUR:-10}"
RAMP="${RAMP:-1000 2000 3000 4000 5000 6000 7000}"
ONLY="${ONLY:-direct logbook ops litellm}"   # which targets to run
LITELLM_RAMP="${LITELLM_RAMP:-100 200 400 600 800 1000}"
BENCH_VENV="${BENCH_VENV:-$HOME/.cache/logbook/bench-venv}"
BENCH_PY="${BENCH_PY:-python3}"
OUT="bench/out"
WORK="$(mktemp -d /tmp/logbook-bench.XXXXXX)"
mkdir -p "$OUT"
RESULTS="$OUT/gateway-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --release --locked -p logbook -p logbook-bench --bins >&2
BIN="$CARGO_TARGET_DIR/release"

start() { # name, command...: start a server that prints "listening on http://ADDR"
  local name="$1"; shift
  "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" &
  PIDS+=("$!")
  LAST_PID="$!"
}

url_of() { # name: wait for its "listening on" line and echo the URL
  for _ in $(seq 1 300); do
    if grep -q "listening on" "$WORK/$1.out" 2>/dev/null; then
      grep -o 'http://[0-9.:]*' "$WORK/$1.out" | head -1; return 0
    fi
    sleep 0.1
  done
  echo "$1 did not start:" >&2; cat "$WORK/$1.err" >&2; return 1
}

load() { # label url rate secs [kind] [extra loadgen flags]
  "$BIN/loadgen" --label "$1" --url "$2" --rate "$3" --duration "$4" --kind "${5:-openai-chat}" ${6:-} | tee -a "$RESULTS"
}

floor_probe() { # before|after
  "$BIN/fsync-probe" --dir "$WORK/floor" --files 2 --rate $((RATE / 2)) --n $((RATE / 2 * DUR)) \
    --size 5120 --label "flush-floor-$1" | tee -a "$RESULTS"
}

echo "# machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB, $(uname -r), $(date -u +%FT%TZ)" | tee -a "$RESULTS"

start upstream "$BIN/mock-upstream"
UP=$(url_of upstream)
for mode in strict async; do
  # The built-in mock's route comes first: the first matching route wins.
  { printf '[logging]\nmode = "%s"\n' "$mode"
    printf '[[providers]]\nname = "mock"\ntype = "mock"\n[[routes]]\nmodel = "bench-mock"\nprovider = "mock"\n'
    bench_upstream_toml "$UP"; } > "$WORK/logbook-$mode.toml"
done

"$BIN/fsync-probe" --dir "$WORK/strict-data" | tee -a "$RESULTS"
case " $ONLY " in *" direct "*) load direct "$UP/v1/chat/completions" "$RATE" "$DUR" ;; esac

for mode in strict async; do
  case " $ONLY " in *" logbook "*) ;; *) continue ;; esac
  start "logbook-$mode" "$BIN/logbook" serve --listen 127.0.0.1:0 --data-dir "$WORK/$mode-data" --config "$WORK/logbook-$mode.toml"
  LB_PID="$LAST_PID"
  LB=$(url_of "logbook-$mode")
  # The flush floor of the disk just before and just after strict mode's run: two files
  # fdatasyncing at half the rate each (the journal's flush load at RATE calls/s); its
  # floor_p99_ms is the flush wait no server answering after a flush could have avoided.
  if [ "$mode" = strict ]; then floor_probe before; fi
  load "logbook-$mode" "$LB/v1/chat/completions" "$RATE" "$DUR"
  if [ "$mode" = strict ]; then floor_probe after; fi
  echo "{\"label\":\"logbook-$mode-health\",\"health\":$(curl -s "$LB/healthz")}" | tee -a "$RESULTS"
  if [ "$mode" = strict ]; then
    for r in $RAMP; do load "logbook-strict-ramp" "$LB/v1/chat/completions" "$r" 5; done
    load "logbook-strict-converse-builtin-mock" "$LB/model/bench-mock/converse" "$RATE" "$DUR" bedrock-converse
  fi
  kill "$LB_PID"; wait "$LB_PID" 2>/dev/null || true
done

# Issue #10: strict mode with a price for the model, five budgets the caller matches (so
# every call reserves and is charged) and three alarms evaluated every second, against
# plain strict mode above (cost and metrics are always on in both).
case " $ONLY " in *" ops "*)
  cp "$WORK/logbook-strict.toml" "$WORK/logbook-ops.toml"
  {
    printf '[pricing]\nversion = "bench"\n[[pricing.price]]\nprovider = "openai"\nmodels = ["bench-model"]\ninput = "0.15"\noutput = "0.60"\n'
    printf '[alarm_evaluation]\nevery_ms = %s\n' "${OPS_ALARM_MS:-1000}"
    for i in 1 2 3 4 5; do
      printf '[[budgets]]\nname = "bench-%s"\nprincipal = "arn:aws:iam::000000000000:user/bench"\nperiod = "day"\nlimit_usd = "1000000"\nwarn_at = [50, 80]\n' "$i"
    done
    [ "${OPS_ALARMS:-1}" = 0 ] || for m in InvocationThrottles InvocationClientErrors InvocationLatency; do
      printf '[[alarms]]\nname = "bench-%s"\nmetric = "%s"\nmodel_id = "bench-model"\nstatistic = "Sum"\nperiod = 60\nevaluation_periods = 1\nthreshold = 1000000\ncomparison = "GreaterThanThreshold"\n' "$m" "$m"
    done
  } >> "$WORK/logbook-ops.toml"
  start "logbook-ops" "$BIN/logbook" serve --listen 127.0.0.1:0 --data-dir "$WORK/ops-data" --config "$WORK/logbook-ops.toml"
  OPS_PID="$LAST_PID"
  OPS=$(url_of "logbook-ops")
  # Plain strict mode beside it, started at the same time and loaded alternately with it
  # after the same wait, so both see the same machine.
  start "logbook-plain" "$BIN/logbook" serve --listen 127.0.0.1:0 --data-dir "$WORK/plain-data" --config "$WORK/logbook-strict.toml"
  PLAIN_PID="$LAST_PID"
  PLAIN=$(url_of "logbook-plain")
  # Alarms on whole-minute periods are evaluated from in-memory series once the series
  # cover their window (from the first minute boundary after start); before that, from
  # the records. Measure the steady state unless OPS_WARM=0.
  if [ "${OPS_WARM:-1}" = 1 ]; then sleep $(( 62 - 10#$(date +%S) )); fi
  for round in 1 2; do
    load "logbook-strict-plain" "$PLAIN/v1/chat/completions" "$RATE" "$DUR"
    load "logbook-strict-ops" "$OPS/v1/chat/completions" "$RATE" "$DUR"
  done
  echo "{\"label\":\"logbook-strict-ops-budgets\",\"budgets\":$(curl -s -H 'Authorization: Bearer sk-bench' "$OPS/logbook/budgets" || echo null)}" | tee -a "$RESULTS"
  # Queries the alarms ran (0 when every evaluation came from the in-memory series).
  echo "{\"label\":\"logbook-strict-ops-queries\",\"queries\":$(curl -s "$OPS/healthz" | "$BENCH_PY" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["queries"]))' 2>/dev/null || echo null)}" | tee -a "$RESULTS"
  kill "$OPS_PID" "$PLAIN_PID"; wait "$OPS_PID" "$PLAIN_PID" 2>/dev/null || true
  ;;
esac

# Issue #11: strict mode with tamper evidence (a checkpoint every second), redaction of
# every built-in detector on the archive and the log groups, and encryption at rest of the
# journal and the store, against strict mode with all three off; loaded alternately after
# the same wait.
case " $ONLY " in *" integrity "*)
  { cat "$WORK/logbook-strict.toml"; printf '[integrity]\nenabled = false\n'; } > "$WORK/logbook-bare.toml"
  rm -f "$WORK/proof-master.key"
  "$BIN/logbook" keys generate-master --out "$WORK/proof-master.key" >&2
  { cat "$WORK/logbook-strict.toml"
    printf '[integrity]\ncheckpoint_every_ms = 1000\n[redaction.all]\ndetectors = ["all"]\n'
    printf '[encryption]\nmaster_key_file = "%s"\n' "$WORK/proof-master.key"
    printf '[archive]\nredact = "all"\n[store]\nredact = "all"\n'; } > "$WORK/logbook-proof.toml"
  start "logbook-proof" "$BIN/logbook" serve --listen 127.0.0.1:0 --data-dir "$WORK/proof-data" --config "$WORK/logbook-proof.toml"
  PROOF_PID="$LAST_PID"; PROOF=$(url_of "logbook-proof")
  start "logbook-bare" "$BIN/logbook" serve --listen 127.0.0.1:0 --data-dir "$WORK/bare-data" --config "$WORK/logbook-bare.toml"
  BARE_PID="$LAST_PID"; BARE=$(url_of "logbook-bare")
  sleep 5
  for round in $(seq "${ROUNDS:-3}"); do
    load "logbook-strict-bare" "$BARE/v1/chat/completions" "$RATE" "$DUR"
    load "logbook-strict-proof" "$PROOF/v1/chat/completions" "$RATE" "$DUR"
  done
  echo "{\"label\":\"logbook-strict-proof-redactions\",\"health\":$(curl -s "$PROOF/healthz" | "$BENCH_PY" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["redactions"]))' 2>/dev/null || echo null)}" | tee -a "$RESULTS"
  kill "$PROOF_PID" "$BARE_PID"; wait "$PROOF_PID" "$BARE_PID" 2>/dev/null || true
  ;;
esac

# Issue #12: the same strict server over HTTP/1.1 and over HTTP/2 (cleartext, prior
# knowledge), loaded alternately.
case " $ONLY " in *" http2 "*)
  start "logbook-h2" "$BIN/logbook" serve --listen 127.0.0.1:0 --data-dir "$WORK/h2-data" --config "$WORK/logbook-strict.toml"
  H2_PID="$LAST_PID"; H2=$(url_of "logbook-h2")
  sleep 5
  for round in 1 2; do
    load "logbook-strict-http1" "$H2/v1/chat/completions" "$RATE" "$DUR"
    load "logbook-strict-http2" "$H2/v1/chat/completions" "$RATE" "$DUR" openai-chat --http2
  done
  kill "$H2_PID"; wait "$H2_PID" 2>/dev/null || true
  ;;
esac

if [[ " $ONLY " != *" litellm "* ]]; then
  :
elif [ -x "$BENCH_VENV/bin/litellm" ]; then
  cat > "$WORK/litellm_logger.py" <<'EOF'
import json, os
from litellm.integrations.custom_logger import CustomLogger

class FileLogger(CustomLogger):
    def __init__(self):
        self.f = open(os.environ["LITELLM_BENCH_LOG"], "a")
    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self.f.write(json.dumps(kwargs.get("standard_logging_object"), default=str) + "\n")
    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self.f.write(json.dumps(kwargs.get("standard_logging_object"), default=str) + "\n")

handler = FileLogger()
EOF
  cat > "$WORK/litellm.yaml" <<EOF
model_list:
  - model_name: bench-model
    litellm_params:
      model: openai/bench-model
      api_base: $UP/v1
      api_key: sk-none
litellm_settings:
  callbacks: litellm_logger.handler
general_settings:
  master_key: sk-bench
EOF
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  ( cd "$WORK" && LITELLM_BENCH_LOG="$WORK/litellm.jsonl" LITELLM_LOG=ERROR exec "$BENCH_VENV/bin/litellm" --config litellm.yaml \
      --host 127.0.0.1 --port "$PORT" --num_workers 2 > "$WORK/litellm.out" 2> "$WORK/litellm.err" ) &
  PIDS+=("$!")
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$PORT/health/liveliness" >/dev/null 2>&1 && break; sleep 0.2; done
  LL="http://127.0.0.1:$PORT"
  load "litellm" "$LL/v1/chat/completions" "$RATE" "$DUR" || true
  for r in $LITELLM_RAMP; do load "litellm-ramp" "$LL/v1/chat/completions" "$r" 5 || true; done
  echo "{\"label\":\"litellm-logged-lines\",\"n\":$(wc -l < "$WORK/litellm.jsonl" 2>/dev/null || echo 0)}" | tee -a "$RESULTS"
else
  echo "LiteLLM not installed in $BENCH_VENV: pip install 'litellm[proxy]' there to include the peer" >&2
fi
echo "results: $RESULTS" >&2
