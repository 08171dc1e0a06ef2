//! `tiercache ns …`: creates, migrates, lists, shows, pins, unpins and deletes namespaces, and says
//! what it did.
//!
//! Namespace names are checked before the cache opens (`main.rs`); the rules are the engine's.

use anyhow::{Result, bail};
use tiercache_engine::{Cache, NamespaceOptions};

use crate::args::NsCommand;
use crate::{human_bytes, print_json, print_namespace_table, time_or_dash};

/// Runs one `ns` subcommand and says what it did.
pub(crate) async fn ns(cache: Cache, cmd: &NsCommand) -> Result<u8> {
    match cmd {
        NsCommand::Create { name, source, dir, s3, registry, limits, storage, public, json } => {
            let options = NamespaceOptions {
                copy_to_cache: dir.copy_to_cache,
                ignore: dir.ignore.clone(),
                owner: limits.owner.clone(),
                quota_bytes: limits.quota,
                max_age_ms: limits.max_age.map(|d| d.as_millis() as u64),
                max_entries: limits.max_entries,
                storage: None,
                is_public: *public,
                s3_access_key: s3.s3_access_key.clone(),
                s3_secret_key: s3.s3_secret_key.as_deref().map(tiercache_core::Secret::new),
                registry_user: registry.registry_user.clone(),
                registry_password: registry.registry_password.as_deref().map(tiercache_core::Secret::new),
            };
            let (ns, created) = cache.create_namespace_in(name, source.as_deref(), &options, storage.as_ref()).await?;
            let place = ns.options.storage.as_deref().map_or_else(|| "managed".to_owned(), |d| format!("path:{d}"));
            let shown_source = ns.source.as_deref().map(tiercache_core::redact_url);
            if *json {
                print_json(&serde_json::json!({
                    "name": ns.name,
                    "created": created,
                    "source": shown_source,
                    "storage": place,
                }))?;
            } else {
                let verb = if created { "created" } else { "already exists:" };
                println!(
                    "{verb} namespace {} (source: {}; storage: {place})",
                    ns.name,
                    shown_source.unwrap_or("none".into())
                );
            }
        }
        NsCommand::Migrate { name, to, json } => {
            let report = cache.move_namespace(name, to).await?;
            if *json {
                print_json(&report)?;
            } else if report.from == report.to {
                println!("namespace {name} is already in {}; nothing to move", report.to);
            } else {
                println!(
                    "moved namespace {name} from {} to {}: {} blobs, {} copied ({}), {} freed{}",
                    report.from,
                    report.to,
                    report.n_blobs,
                    report.n_copied,
                    human_bytes(report.copied_bytes),
                    human_bytes(report.released_bytes),
                    if report.n_missing > 0 {
                        format!("; {} blobs were in neither place and will be fetched again", report.n_missing)
                    } else {
                        String::new()
                    }
                );
            }
        }
        NsCommand::List { json } => {
            let list = cache.namespaces().await?;
            if *json {
                print_json(&list)?;
            } else {
                print_namespace_table(&list);
            }
        }
        NsCommand::Show { name, json } => {
            let Some(info) = cache.namespace(name).await? else { bail!("no namespace named {name:?}") };
            if *json {
                print_json(&info)?;
            } else {
                println!("name: {}", info.name);
                println!("source: {}", info.source.as_deref().map_or("none".into(), tiercache_core::redact_url));
                println!(
                    "storage: {}",
                    info.storage.as_deref().map_or_else(|| "managed".to_owned(), |d| format!("path:{d}"))
                );
                if let Some(owner) = &info.owner {
                    println!("owner: {owner}");
                }
                if info.is_public {
                    println!("public: yes (read without a token)");
                }
                let pins = cache.pins(name).await?;
                if !pins.is_empty() {
                    let shown: Vec<&str> =
                        pins.iter().map(|p| if p.is_empty() { "(all)" } else { p.as_str() }).collect();
                    println!("pins: {}", shown.join(", "));
                }
                println!("entries: {} ({})", info.n_entries, human_bytes(info.bytes));
                println!("hits: {}", info.hits);
                println!("oldest: {}", time_or_dash(info.oldest_ms));
                println!("newest: {}", time_or_dash(info.newest_ms));
            }
        }
        NsCommand::Pin { name, key, json } | NsCommand::Unpin { name, key, json } => {
            let is_pin = matches!(cmd, NsCommand::Pin { .. });
            let keys: Vec<Option<&str>> =
                if key.is_empty() { vec![None] } else { key.iter().map(|k| Some(k.as_str())).collect() };
            let mut changes = Vec::new();
            for k in keys {
                let changed = if is_pin { cache.pin(name, k).await? } else { cache.unpin(name, k).await? };
                changes.push(serde_json::json!({ "key": k, "changed": changed }));
                if *json {
                    continue;
                }
                let what = k.map_or_else(|| format!("namespace {name}"), |k| format!("{name}/{k}"));
                match (is_pin, changed) {
                    (true, true) => println!("pinned {what}"),
                    (true, false) => println!("{what} was already pinned"),
                    (false, true) => println!("unpinned {what}"),
                    (false, false) => println!("{what} was not pinned"),
                }
            }
            if *json {
                // `key` null is the whole-namespace pin; `changed` false: it was already so.
                let action = if is_pin { "pin" } else { "unpin" };
                print_json(&serde_json::json!({ "namespace": name, "action": action, "keys": changes }))?;
            }
        }
        NsCommand::Delete { name, json } => {
            let report = cache.delete_namespace(name).await?;
            if *json {
                print_json(&serde_json::json!({ "name": name, "existed": report.is_some(), "removed": report }))?;
            } else {
                match report {
                    Some(r) => println!(
                        "deleted namespace {name}: {} entries, {} blobs, {} freed",
                        r.n_entries,
                        r.n_blobs,
                        human_bytes(r.bytes)
                    ),
                    None => println!("namespace {name} did not exist; nothing to delete"),
                }
            }
        }
    }
    Ok(0)
}
