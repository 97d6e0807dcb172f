//! Integration tests: the real `custos` binary on an ephemeral loopback port, driven over HTTP.
#![allow(unreachable_pub)]

mod admin;
mod alerts;
mod api_fuzz;
mod automation;
mod bulk;
mod cli_admin;
mod cli_audit;
mod common;
mod console;
mod console_pages;
mod crash;
mod customization;
mod demo;
mod errors;
mod fail_closed;
mod feed;
mod ingest;
mod integrity;
mod key_rotation;
mod publish;
mod queries;
mod reindex;
mod reports;
mod retention;
mod retrieve_multiple;
mod saved_reports;
mod search_switch;
mod security;
mod settings_matrix;
mod solutions;
mod streams;
mod support;
mod tamper;
mod views;
