//! `aisle user …`: users and their access keys, through the admin API (`/_aisle/v1/users`).

use anyhow::Context;
use bytes::Bytes;
use clap::Subcommand;

use super::{Connection, admin_call};
use aisle_gateway::users::{NewKey, UserView};

/// `aisle user` subcommands.
#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user with one access key (printed once: keep the secret).
    Add {
        /// User name (letters, digits and ._@+=-).
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// List users, their access key ids and the buckets they own.
    Ls {
        #[command(flatten)]
        conn: Connection,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Remove a user and all their keys (their buckets stay, reachable by the admin).
    Rm {
        /// User name.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Give a user another access key, or take one away with --rm.
    Keys {
        /// User name.
        name: String,
        /// Remove this access key id instead of adding one.
        #[arg(long)]
        rm: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
}

fn print_key(k: &NewKey) {
    println!("user {}", k.name);
    println!("AWS_ACCESS_KEY_ID={}", k.access_key);
    println!("AWS_SECRET_ACCESS_KEY={}", k.secret_key);
}

/// Run an `aisle user` command.
pub async fn user(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add { name, conn } => {
            let body = admin_call(
                &conn,
                "POST",
                &format!("/_aisle/v1/users/{name}"),
                Bytes::new(),
            )
            .await?;
            print_key(&serde_json::from_slice(&body).context("parsing the answer")?);
        }
        UserCommand::Ls { conn, json } => {
            let body = admin_call(&conn, "GET", "/_aisle/v1/users", Bytes::new()).await?;
            let users: Vec<UserView> =
                serde_json::from_slice(&body).context("parsing the answer")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                for u in &users {
                    println!(
                        "{}  keys: {}  buckets: {}",
                        u.name,
                        u.keys.join(", "),
                        if u.buckets.is_empty() {
                            "-".to_string()
                        } else {
                            u.buckets.join(", ")
                        }
                    );
                }
            }
        }
        UserCommand::Rm { name, conn } => {
            admin_call(
                &conn,
                "DELETE",
                &format!("/_aisle/v1/users/{name}"),
                Bytes::new(),
            )
            .await?;
            println!("user {name} removed");
        }
        UserCommand::Keys { name, rm, conn } => match rm {
            Some(key) => {
                let path = format!("/_aisle/v1/users/{name}/keys/{key}");
                admin_call(&conn, "DELETE", &path, Bytes::new()).await?;
                println!("access key {key} of {name} removed");
            }
            None => {
                let path = format!("/_aisle/v1/users/{name}/keys");
                let body = admin_call(&conn, "POST", &path, Bytes::new()).await?;
                print_key(&serde_json::from_slice(&body).context("parsing the answer")?);
            }
        },
    }
    Ok(())
}
