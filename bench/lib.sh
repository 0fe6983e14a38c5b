# Shared by the gateway benchmarks (source it): the bench principal and an
# OpenAI-compatible upstream as the only route, the configuration they start from.
#   bench_upstream_toml URL   # prints it; add [logging] or more around it
bench_upstream_toml() {
  cat <<EOF_TOML
[[principals]]
arn = "arn:aws:iam::000000000000:user/bench"
api_key = "sk-bench"
permissions = ["invoke:*", "logs:read"]
[[providers]]
name = "up"
type = "openai"
base_url = "$1/v1"
[[routes]]
model = "*"
provider = "up"
EOF_TOML
}
