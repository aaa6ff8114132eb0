//! `unitctl`: the ops CLI of unitgate. Validates and applies topologies,
//! drains and undrains datacenters and units by writing their one etcd key,
//! shows status and explains routing decisions (with the auth and quotas
//! that apply), signs test tokens.
#![forbid(unsafe_code)]

mod auth;
mod cli;
mod commands;
mod etcd_setup;
mod gateways;
mod report;
mod status;
mod store;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = cli::Cli::parse();
    match commands::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("unitctl: {e:#}");
            std::process::exit(1);
        }
    }
}
