//! A fast OpenAI-compatible upstream for gateway benchmarks: answers every chat completion
//! at once with a fixed ~1 KB response. Prints `listening on http://ADDR`.

use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde_json::{json, Value};
use std::io::Write;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
}

async fn chat(Json(body): Json<Value>) -> Json<Value> {
    let model = body.get("model").cloned().unwrap_or(json!("mock"));
    Json(json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": logbook_bench::kilobyte_text("answer")}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 256, "completion_tokens": 256, "total_tokens": 512}
    }))
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": "bench-model", "object": "model"}]}))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models));
        let l = tokio::net::TcpListener::bind(&args.listen).await?;
        println!("listening on http://{}", l.local_addr()?);
        std::io::stdout().flush()?;
        axum::serve(l, app).await?;
        Ok(())
    })
}
