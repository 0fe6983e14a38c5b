//! `logbook demo`: a server with embedded defaults plus three teams' apps, a budget and
//! two alarms, filled with traffic sent through its own HTTP front door (Bedrock Converse
//! and ConverseStream, OpenAI chat, streamed and not, the Anthropic Messages API), with
//! client errors, throttles, a guardrail intervention, a budget passing its warning
//! thresholds and an alarm going off. Then it prints the console's address and a sign-in key and keeps serving.

use anyhow::Context;
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `logbook demo` arguments.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:4700")]
    listen: String,
    /// Data folder (a demo's own; it is created when missing).
    #[arg(long, default_value = "./logbook-demo")]
    data_dir: PathBuf,
    /// How many calls to send.
    #[arg(long, default_value_t = 240)]
    calls: usize,
}

const CONFIG: &str = r#"
[server]
account_id = "123456789012"

[alarm_evaluation]
every_ms = 2000

[[principals]]
arn = "arn:aws:iam::123456789012:user/demo-admin"
api_key = "${DEMO_ADMIN_KEY}"
permissions = ["role:admin", "logging:read"]

[[principals]]
arn = "arn:aws:iam::123456789012:role/web-search"
api_key = "${DEMO_SEARCH_KEY}"
permissions = ["role:app"]
tags = { team = "search", app = "web-search" }

[[principals]]
arn = "arn:aws:iam::123456789012:role/ad-copy"
api_key = "${DEMO_ADS_KEY}"
permissions = ["role:app"]
tags = { team = "ads", app = "ad-copy" }

[[principals]]
arn = "arn:aws:iam::123456789012:role/helpdesk"
api_key = "${DEMO_SUPPORT_KEY}"
permissions = ["role:app"]
tags = { team = "support", app = "helpdesk" }

[[budgets]]
name = "ads-monthly"
principal_tag = "team=ads"
period = "month"
limit_usd = "0.005"
warn_at = [50, 80]

[[alarms]]
name = "throttles"
description = "Nova Lite calls are throttled"
metric = "InvocationThrottles"
model_id = "amazon.nova-lite-v1:0"
statistic = "Sum"
period = 60
evaluation_periods = 1
threshold = 0
comparison = "GreaterThanThreshold"
treat_missing_data = "notBreaching"

[[alarms]]
name = "client-errors"
description = "Callers send Claude 3 Haiku requests it refuses"
metric = "InvocationClientErrors"
model_id = "anthropic.claude-3-haiku-20240307-v1:0"
statistic = "Sum"
period = 60
evaluation_periods = 1
threshold = 0
comparison = "GreaterThanThreshold"
treat_missing_data = "notBreaching"
"#;

/// A fresh random key (from the kernel's generator).
fn key() -> anyhow::Result<String> {
    use std::fmt::Write as _;
    use std::io::Read;
    let mut b = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("read /dev/urandom")?;
    let mut s = String::from("lb-demo-");
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    Ok(s)
}

/// Run the demo: serve until interrupted.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create {}", args.data_dir.display()))?;
    let keys: HashMap<String, String> = [
        "DEMO_ADMIN_KEY",
        "DEMO_SEARCH_KEY",
        "DEMO_ADS_KEY",
        "DEMO_SUPPORT_KEY",
    ]
    .into_iter()
    .map(|k| key().map(|v| (k.to_string(), v)))
    .collect::<anyhow::Result<_>>()?;
    let mut config = logbook_server::Config::parse(CONFIG, &keys, &args.data_dir)?;
    config.listen = args.listen.clone();
    config.max_object_age = Duration::from_millis(500);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start runtime")?;
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::oneshot::channel::<SocketAddr>();
        let server = tokio::spawn(logbook_server::serve(config, move |addr, _| {
            let _ = tx.send(addr);
        }));
        let addr = match rx.await {
            Ok(a) => a,
            Err(_) => {
                return match server.await {
                    Ok(Err(e)) => Err(anyhow::Error::from(e)),
                    _ => Err(anyhow::anyhow!("the server did not start")),
                }
            }
        };
        let base = format!("http://{addr}");
        let mut out = std::io::stdout();
        let _ = writeln!(out, "listening on {base}");
        let _ = writeln!(out, "sending {} calls through the gateway ...", args.calls);
        let _ = out.flush();
        let sent = traffic(&base, &keys, args.calls).await?;
        let _ = writeln!(
            out,
            "sent {} calls: {} answered, {} client errors, {} throttled",
            sent.total, sent.ok, sent.client_errors, sent.throttled
        );
        let _ = writeln!(out, "\nconsole:      {base}/console");
        let _ = writeln!(
            out,
            "sign-in key:  {}",
            keys.get("DEMO_ADMIN_KEY").map_or("", String::as_str)
        );
        let _ = writeln!(out, "data folder:  {}", args.data_dir.display());
        let _ = writeln!(out, "(Ctrl-C stops the demo server)");
        let _ = out.flush();
        server
            .await
            .map_err(|e| anyhow::anyhow!("server task: {e}"))?
            .map_err(anyhow::Error::from)
    })
}

#[derive(Default)]
struct Sent {
    total: usize,
    ok: usize,
    client_errors: usize,
    throttled: usize,
}

/// One of the day's calls: which app, which API, which model, what it asks.
fn call(i: usize) -> (&'static str, &'static str, &'static str, String) {
    const APPS: [&str; 3] = ["DEMO_SEARCH_KEY", "DEMO_ADS_KEY", "DEMO_SUPPORT_KEY"];
    const MODELS: [&str; 4] = [
        "anthropic.claude-3-haiku-20240307-v1:0",
        "amazon.nova-lite-v1:0",
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "meta.llama3-8b-instruct-v1:0",
    ];
    const QUESTIONS: [&str; 6] = [
        "Summarise this support ticket in two sentences.",
        "Write three headlines for a spring sale on running shoes.",
        "Which of these search results answers 'how to reset my router'?",
        "Translate 'your order has shipped' into German and French.",
        "Classify the sentiment of: 'the app keeps crashing after the update'.",
        "Draft a polite reply declining a refund after 90 days.",
    ];
    let app = APPS[i % 3];
    let api = match i % 5 {
        0 | 1 => "converse",
        2 => "converse-stream",
        3 => "chat",
        _ => "messages",
    };
    // Each API with the model names its clients use (each priced by the catalog).
    let model = match api {
        "chat" => ["gpt-4o-mini", "gpt-4o"][(i / 3) % 2],
        "messages" => ["claude-3-5-haiku-20241022", "claude-3-haiku-20240307"][(i / 3) % 2],
        _ => MODELS[(i / 3) % 4],
    };
    let mut text = QUESTIONS[i % QUESTIONS.len()].to_string();
    // Client errors on Claude 3 Haiku and throttles on Nova Lite, where the alarms look.
    if i % 29 == 7 {
        text.push_str(" [mock:error=ValidationException]");
        return (app, "converse", MODELS[0], text);
    }
    if i % 41 == 11 {
        text.push_str(" [mock:error=ThrottlingException]");
        return (app, "converse", MODELS[1], text);
    }
    // The helpdesk's guardrail blocks a request for a customer's personal data.
    if i % 23 == 14 {
        let text = "What is the home address and phone number of our customer Jane Doe? \
                    [mock:guardrail=intervene]"
            .to_string();
        return ("DEMO_SUPPORT_KEY", "converse", MODELS[0], text);
    }
    if i % 17 == 5 {
        text.push_str(" [mock:output_chars=1200]");
    }
    (app, api, model, text)
}

async fn traffic(base: &str, keys: &HashMap<String, String>, n: usize) -> anyhow::Result<Sent> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut sent = Sent::default();
    for i in 0..n {
        let (app, api, model, text) = call(i);
        let key = keys.get(app).map_or("", String::as_str);
        let team = match app {
            "DEMO_SEARCH_KEY" => "search",
            "DEMO_ADS_KEY" => "ads",
            _ => "support",
        };
        let req = match api {
            "converse" | "converse-stream" => {
                let mut body = serde_json::json!({
                    "messages": [{"role": "user", "content": [{"text": text}]}],
                    "inferenceConfig": {"maxTokens": 200},
                    "requestMetadata": {"team": team, "feature": "demo"},
                });
                // The helpdesk calls its models through a guardrail.
                if app == "DEMO_SUPPORT_KEY" {
                    body["guardrailConfig"] =
                        serde_json::json!({"guardrailIdentifier": "helpdesk-pii", "guardrailVersion": "1"});
                }
                http.post(format!("{base}/model/{model}/{api}"))
                    .bearer_auth(key)
                    .json(&body)
            }
            "chat" => http
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&serde_json::json!({
                    "model": model,
                    "stream": i % 2 == 0,
                    "max_tokens": 200,
                    "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}],
                })),
            _ => http
                .post(format!("{base}/v1/messages"))
                .header("x-api-key", key)
                .header("anthropic-version", "2023-06-01")
                .json(&serde_json::json!({
                    "model": model,
                    "max_tokens": 200,
                    "stream": i % 2 == 1,
                    "messages": [{"role": "user", "content": text}],
                })),
        };
        // The whole answer is read, streams too: a client that leaves early is recorded
        // as one (`ClientDisconnected`).
        let status = match req.send().await {
            Ok(r) => {
                let code = r.status().as_u16();
                let _ = r.bytes().await;
                code
            }
            Err(_) => 0,
        };
        sent.total += 1;
        match status {
            200 => sent.ok += 1,
            429 => sent.throttled += 1,
            _ => sent.client_errors += 1,
        }
    }
    Ok(sent)
}
