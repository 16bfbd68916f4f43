//! `starling authority new|issue`: the owner's tool for a private network.
//!
//! The authority key signs membership credentials; nodes only need its public key
//! (`starling node --authority <key>`) and their own credential (`--credential FILE`).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use starling_core::admission::Credential;
use starling_core::identity::{Keypair, PeerId};

use crate::common::{CliError, CliResult, EXIT_IDENTITY};

/// Where `authority new` writes and `authority issue` reads by default.
pub const DEFAULT_AUTHORITY_FILE: &str = "authority.key";

/// `starling authority`.
#[derive(Args, Debug)]
#[command(
    arg_required_else_help = true,
    after_help = "Example:\n  starling authority new --out authority.key\n  starling authority issue \
--key authority.key --peer <peer id> --network mynet --expires 30d --out node.cred"
)]
pub struct AuthorityArgs {
    #[command(subcommand)]
    command: AuthorityCommand,
}

#[derive(Subcommand, Debug)]
enum AuthorityCommand {
    /// Create a network authority key file and print its public key.
    New(NewArgs),
    /// Issue a membership credential for a peer.
    Issue(IssueArgs),
}

/// `starling authority new`.
#[derive(Args, Debug)]
#[command(
    after_help = "Prints the authority's public key: give it to every node as --authority.\n\n\
Example:\n  starling authority new --out authority.key"
)]
pub struct NewArgs {
    /// The key file to write (mode 0600). Keep it off the nodes.
    #[arg(long, short = 'o', value_name = "FILE", default_value = DEFAULT_AUTHORITY_FILE)]
    pub out: PathBuf,
    /// Overwrite the file if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `starling authority issue`.
#[derive(Args, Debug)]
#[command(
    after_help = "Prints the credential (one line) on stdout, or writes it with --out.\n\n\
Example:\n  starling authority issue --key authority.key --peer $(starling id -i node.key) \
--network mynet --expires 30d --out node.cred\n  starling node --bind 0.0.0.0:4000 -i node.key \
--network mynet --authority <authority key> --credential node.cred"
)]
pub struct IssueArgs {
    /// The authority key file (written by `starling authority new`).
    #[arg(long, short = 'k', value_name = "FILE", default_value = DEFAULT_AUTHORITY_FILE)]
    pub key: PathBuf,
    /// The member's peer id (64 hex digits, as printed by `starling id`).
    #[arg(long, value_name = "ID")]
    pub peer: String,
    /// The network id the credential is valid on.
    #[arg(long, value_name = "ID", default_value = "starling")]
    pub network: String,
    /// Expiry: a duration from now (90s, 30m, 12h, 30d, 4w) or a UTC date (2027-01-31).
    #[arg(long, value_name = "WHEN")]
    pub expires: String,
    /// Write the credential to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Runs `starling authority …`.
pub fn run(args: AuthorityArgs) -> CliResult {
    match args.command {
        AuthorityCommand::New(a) => new(a),
        AuthorityCommand::Issue(a) => issue(a),
    }
}

fn new(args: NewArgs) -> CliResult {
    if args.out.exists() && !args.force {
        return Err(CliError::new(
            EXIT_IDENTITY,
            format!(
                "{} already exists (use --force to replace it; every credential it issued \
                 would stop working)",
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

fn issue(args: IssueArgs) -> CliResult {
    let peer: PeerId = args.peer.trim().parse().map_err(|_| {
        CliError::usage(format!(
            "invalid --peer {:?}: expected 64 hex digits",
            args.peer
        ))
    })?;
    if args.network.is_empty() || args.network.len() > 200 {
        return Err(CliError::usage("--network must be 1 to 200 bytes"));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let expires = parse_expiry(&args.expires, now)?;
    let key = Keypair::load(&args.key)?;
    let c = Credential::issue(&key, peer, &args.network, expires);
    match &args.out {
        Some(path) => {
            write_file(path, &format!("{}\n", c.to_text()))?;
            eprintln!("wrote {}", path.display());
        }
        None => println!("{}", c.to_text()),
    }
    eprintln!(
        "credential for {} on network {:?}, expires at {expires} (Unix seconds)",
        peer.short(),
        args.network
    );
    Ok(())
}

fn write_file(path: &Path, text: &str) -> CliResult {
    std::fs::write(path, text)
        .map_err(|e| CliError::other(format!("cannot write {}: {e}", path.display())))
}

/// Expiry in Unix seconds: a duration from `now` (`90s`, `30m`, `12h`, `30d`, `4w`) or a
/// UTC date `YYYY-MM-DD` (midnight); it must be in the future.
pub fn parse_expiry(s: &str, now: u64) -> Result<u64, CliError> {
    let s = s.trim();
    let bad = || {
        CliError::usage(format!(
            "invalid --expires {s:?}: expected a duration (90s, 30m, 12h, 30d, 4w) or a date \
             (YYYY-MM-DD)"
        ))
    };
    let at = if let Some((y, rest)) = s.split_once('-') {
        let (m, d) = rest.split_once('-').ok_or_else(bad)?;
        let (y, m, d): (i64, u32, u32) = (
            y.parse().map_err(|_| bad())?,
            m.parse().map_err(|_| bad())?,
            d.parse().map_err(|_| bad())?,
        );
        if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            return Err(bad());
        }
        let days = days_from_civil(y, m, d);
        u64::try_from(days).map_err(|_| bad())? * 86_400
    } else {
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (n, unit) = s.split_at(split);
        let n: u64 = n.parse().map_err(|_| bad())?;
        let mult = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(bad()),
        };
        n.checked_mul(mult)
            .and_then(|d| d.checked_add(now))
            .ok_or_else(bad)?
    };
    if at <= now {
        return Err(CliError::usage(format!(
            "--expires {s:?} is not in the future"
        )));
    }
    Ok(at)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Reads a private network's settings from `--authority` and `--credential` (both or
/// neither).
pub fn private_network(
    authority: Option<&str>,
    credential: Option<&Path>,
) -> Result<Option<(PeerId, Credential)>, CliError> {
    match (authority, credential) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(CliError::usage(
            "--authority needs --credential (this node's credential from `starling authority issue`)",
        )),
        (None, Some(_)) => Err(CliError::usage(
            "--credential needs --authority (the network authority's public key)",
        )),
        (Some(a), Some(path)) => {
            let authority: PeerId = a.trim().parse().map_err(|_| {
                CliError::usage(format!("invalid --authority {a:?}: expected 64 hex digits"))
            })?;
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::new(
                    EXIT_IDENTITY,
                    format!("cannot read credential {}: {e}", path.display()),
                )
            })?;
            let c = Credential::from_text(&text).map_err(|e| {
                CliError::new(EXIT_IDENTITY, format!("credential {}: {e}", path.display()))
            })?;
            Ok(Some((authority, c)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_parses_durations_and_dates() {
        assert_eq!(parse_expiry("90s", 1000).unwrap(), 1090);
        assert_eq!(parse_expiry("2h", 0).unwrap(), 7200);
        assert_eq!(parse_expiry("1w", 0).unwrap(), 604_800);
        assert_eq!(parse_expiry("2000-03-01", 0).unwrap(), 951_868_800);
        assert_eq!(parse_expiry("1970-01-02", 0).unwrap(), 86_400);
        for bad in ["", "5", "5y", "h", "2000-13-01", "2000-01", "x-y-z", "-5d"] {
            assert!(parse_expiry(bad, 0).is_err(), "{bad}");
        }
        assert!(parse_expiry("2000-01-01", 2_000_000_000).is_err());
    }
}
