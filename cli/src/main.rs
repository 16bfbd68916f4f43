//! `starling`: run a Starling node, poke at a network from the shell, and watch a live
//! local demo of the overlay. See docs/CLI.md for every command with examples.

mod authority;
mod client;
mod common;
mod demo;
mod http;
mod keys;
mod node_cmd;
mod web;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use common::CliError;

/// Starling: an embeddable peer-to-peer gossip overlay (membership, pub/sub, presence).
#[derive(Parser, Debug)]
#[command(name = "starling", version, about, long_about = None)]
#[command(propagate_version = true, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new identity key file and print its peer id.
    Keygen(keys::KeygenArgs),
    /// Print the peer id of an identity key file.
    Id(keys::IdArgs),
    /// Run a long-lived node (e.g. the bootstrap peer that apps point at).
    Node(node_cmd::NodeArgs),
    /// Publish a message (or each line of standard input) on a topic.
    Pub(client::PubArgs),
    /// Print the messages published on a topic.
    Sub(client::SubArgs),
    /// Show who is online on a topic; optionally announce yourself and watch changes.
    Presence(client::PresenceArgs),
    /// Run N nodes on loopback in this process and show the overlay at work.
    Demo(demo::DemoArgs),
    /// Private networks: create the network authority key, issue member credentials.
    Authority(authority::AuthorityArgs),
}

/// Options shared by the commands that join a network as a short-lived client.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// A peer to join through: "<peer id>@host:port" (as printed by `starling node`) or
    /// "host:port". Repeat for more.
    #[arg(long, short = 'b', value_name = "PEER", required = true)]
    pub bootstrap: Vec<String>,
    /// The topic name.
    #[arg(long, short = 't', value_name = "T")]
    pub topic: String,
    /// UDP address to bind locally.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:0")]
    pub bind: String,
    /// Network id: must match the network's nodes.
    #[arg(long, value_name = "ID", default_value = "starling")]
    pub network: String,
    /// Identity key file (created if missing); default: a fresh identity.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Private network: the authority's public key (with --credential and --identity).
    #[arg(long, value_name = "KEY")]
    pub authority: Option<String>,
    /// Private network: this node's credential file (`starling authority issue`).
    #[arg(long, value_name = "FILE")]
    pub credential: Option<PathBuf>,
    /// Seconds to wait for the bootstrap peer and for a neighbour on the topic.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(a) => keys::keygen(a),
        Command::Id(a) => keys::id(a),
        Command::Node(a) => node_cmd::run(a),
        Command::Pub(a) => client::publish(a),
        Command::Sub(a) => client::subscribe(a),
        Command::Presence(a) => client::presence(a),
        Command::Demo(a) => demo::run(a),
        Command::Authority(a) => authority::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError { code, message }) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}
