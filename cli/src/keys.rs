//! `starling keygen` and `starling id`.

use std::path::PathBuf;

use clap::Args;
use starling_core::identity::Keypair;

use crate::common::{CliError, CliResult, EXIT_IDENTITY};

/// Where `keygen` writes and `id` reads by default.
pub const DEFAULT_KEY_FILE: &str = "starling.key";

/// `starling keygen`.
#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  starling keygen --out node.key\n  starling node --bind 0.0.0.0:4000 --identity node.key"
)]
pub struct KeygenArgs {
    /// The key file to write (mode 0600).
    #[arg(long, short = 'o', value_name = "FILE", default_value = DEFAULT_KEY_FILE)]
    pub out: PathBuf,
    /// Overwrite the file if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `starling id`.
#[derive(Args, Debug)]
#[command(after_help = "Example:\n  starling id --identity node.key")]
pub struct IdArgs {
    /// The key file to read.
    #[arg(long, short = 'i', value_name = "FILE", default_value = DEFAULT_KEY_FILE)]
    pub identity: PathBuf,
}

/// Writes a fresh key and prints its peer id.
pub fn keygen(args: KeygenArgs) -> CliResult {
    if args.out.exists() && !args.force {
        return Err(CliError::new(
            EXIT_IDENTITY,
            format!(
                "{} already exists (use --force to replace it; its peer id would change)",
                args.out.display()
            ),
        ));
    }
    let key = Keypair::generate(&mut rand::rngs::OsRng);
    key.save(&args.out)?;
    eprintln!("wrote {}", args.out.display());
    println!("{}", key.peer_id());
    Ok(())
}

/// Prints the peer id of a key file.
pub fn id(args: IdArgs) -> CliResult {
    let key = Keypair::load(&args.identity)?;
    println!("{}", key.peer_id());
    Ok(())
}
