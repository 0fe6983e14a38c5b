//! The HTTP front door: Bedrock runtime and OpenAI-compatible APIs, capture of every call
//! into a Bedrock `ModelInvocationLog` record, and the wiring of journal and delivery.

pub mod alarms;
pub mod anthropic_api;
pub mod app;
pub mod auth;
pub mod bedrock;
pub mod budget;
pub mod capture;
pub mod cluster;
pub mod config;
pub mod console;
pub mod control;
pub mod control_api;
pub mod http_util;
pub mod identity;
pub mod invoke;
pub mod lifecycle;
pub mod listener;
pub mod logs_api;
pub mod metric_filters;
pub mod metrics_api;
pub mod openai;
pub mod routing;
pub mod shared_budgets;
pub mod shared_groups;
pub mod spend;
pub mod stream;
pub mod tools;

pub use app::serve;
pub use config::Config;
