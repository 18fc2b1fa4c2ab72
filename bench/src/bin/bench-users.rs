//! `bench-users`: make benchmark users, each with its own password, salt and TOTP secret,
//! in the forms both servers and the load generator read:
//!
//! - `users.txt`: `name password base32-secret` per line (for radius-load),
//! - `portcullis.csv`: `name,password_hash,totp_secret` for `portcullis user import`,
//! - `freeradius-users`: a FreeRADIUS `users` file (`Crypt-Password`, `TOTP-Secret`).
//!
//! Hashes: SHA-512 crypt (`$6$`, 5000 rounds or `--rounds`, a random 16-character salt per
//! user), or with `--argon2` argon2id at Portcullis's default cost (19 MiB, t=2, p=1).
//! Hashing runs on `--threads` threads.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
use clap::Parser;
use rand::{Rng, RngCore};

/// Make benchmark users.
#[derive(Debug, Parser)]
#[command(name = "bench-users")]
struct Args {
    /// How many users.
    #[arg(long)]
    count: usize,
    /// Directory to write the files to (created if needed).
    #[arg(long)]
    out: PathBuf,
    /// Prefix of the user names (`PREFIX000001`, ...).
    #[arg(long, default_value = "u")]
    prefix: String,
    /// Hash passwords with argon2id (Portcullis's default cost) instead of `$6$`; no
    /// FreeRADIUS file is written then.
    #[arg(long)]
    argon2: bool,
    /// Rounds of the SHA-512 crypt hashes (crypt(3) allows 1000 and up; 5000 is its
    /// default and leaves `rounds=` out of the hash).
    #[arg(long, default_value_t = sha_crypt::ROUNDS_DEFAULT)]
    rounds: usize,
    /// Hashing threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

struct Made {
    name: String,
    password: String,
    secret: String,
    hash: String,
}

fn random_password(rng: &mut impl Rng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..14)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

fn hash(password: &str, argon2: bool, rounds: usize) -> Result<String> {
    if argon2 {
        let params = argon2::Params::new(19 * 1024, 2, 1, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        a.hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("argon2id: {e}"))
    } else {
        let params = sha_crypt::Sha512Params::new(rounds)
            .map_err(|e| anyhow::anyhow!("sha-crypt parameters: {e:?}"))?;
        sha_crypt::sha512_simple(password, &params)
            .map_err(|e| anyhow::anyhow!("sha512 crypt: {e:?}"))
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let width = args.count.to_string().len().max(6);
    let threads = args.threads.clamp(1, 64);
    let per_thread = args.count.div_ceil(threads);
    let made: Vec<Made> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let args = &args;
                scope.spawn(move || -> Result<Vec<Made>> {
                    let mut rng = rand::thread_rng();
                    let range = (t * per_thread)..((t + 1) * per_thread).min(args.count);
                    range
                        .map(|i| {
                            let password = random_password(&mut rng);
                            let mut secret = [0u8; 20];
                            rng.fill_bytes(&mut secret);
                            Ok(Made {
                                name: format!("{}{:0width$}", args.prefix, i + 1),
                                hash: hash(&password, args.argon2, args.rounds)?,
                                password,
                                secret: data_encoding::BASE32_NOPAD.encode(&secret),
                            })
                        })
                        .collect()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(args.count);
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a hashing thread panicked"))??,
            );
        }
        Ok::<_, anyhow::Error>(all)
    })?;

    let (mut load, mut csv, mut fr) = (String::new(), String::new(), String::new());
    csv.push_str("name,password_hash,totp_secret\n");
    for m in &made {
        let _ = writeln!(load, "{} {} {}", m.name, m.password, m.secret);
        // argon2id PHC strings hold commas: the hash cell is quoted.
        let _ = writeln!(csv, "{},\"{}\",{}", m.name, m.hash, m.secret);
        let _ = writeln!(
            fr,
            "{}\tCrypt-Password := \"{}\", TOTP-Secret := \"{}\"\n",
            m.name, m.hash, m.secret
        );
    }
    let write = |name: &str, text: &str| {
        let path = args.out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write("users.txt", &load)?;
    write("portcullis.csv", &csv)?;
    if !args.argon2 {
        write("freeradius-users", &fr)?;
    }
    eprintln!(
        "bench-users: {} users written to {}",
        made.len(),
        args.out.display()
    );
    Ok(())
}
