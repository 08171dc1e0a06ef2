//! `tiercache derive --ns NAMESPACE --recipe RECIPE [--size N] [--param NAME=VALUE…] [--prefix P]`:
//! asks for one derivation of every entry of a namespace (a directory of photos, say), as
//! background work of this process's worker pool, waits for them all with a progress bar, and
//! says how many were made, were there already, failed, or were not inputs the recipe takes.
//!
//! It lists keys and counts answers; deriving is the engine's.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde::Serialize;
use tiercache_engine::{Cache, DeriveAsk, DeriveInput, Derived, Error, ListRequest, Priority, RecipeFault};

use crate::args::DeriveArgs;

/// Keys listed per page.
const PAGE_KEYS: usize = 1000;
/// The longest one derivation is waited for (a job's own limit is shorter).
const WAIT: Duration = Duration::from_secs(3600);

/// What `derive` did.
#[derive(Debug, Default, Serialize)]
struct Summary {
    namespace: String,
    recipe: String,
    /// Entries asked for.
    inputs: u64,
    /// Outputs made now.
    made: u64,
    /// Outputs that were there already (here, or in the shared tier).
    already: u64,
    /// Inputs the recipe failed on (damaged, over a limit).
    failed: u64,
    /// Inputs the recipe does not take (a text file asked for a thumbnail).
    unsupported: u64,
    /// The first failures, with their keys (at most 20).
    failures: Vec<(String, String)>,
    seconds: f64,
}

/// How one ask ended.
enum Outcome {
    Made,
    Already,
    Failed(String),
    Unsupported,
}

/// `tiercache derive`.
pub(crate) async fn derive(cache: Cache, args: &DeriveArgs) -> Result<u8> {
    let t0 = Instant::now();
    let mut params = Vec::new();
    if let Some(size) = args.size {
        params.push(("size".to_owned(), size.to_string()));
    }
    for p in &args.params {
        let Some((k, v)) = p.split_once('=') else { bail!("--param {p:?} is not NAME=VALUE") };
        params.push((k.to_owned(), v.to_owned()));
    }
    let keys = list_keys(&cache, &args.ns, args.prefix.as_deref().unwrap_or("")).await?;
    let progress = if args.json || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(keys.len() as u64)
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta}").expect("a valid template"),
    );
    let ask =
        DeriveAsk { recipe: args.recipe.clone(), params, accept: None, wait: WAIT, priority: Priority::Background };
    // As many asks at once as the queue takes, and more than the workers, so none idles.
    let parallel = 64;
    let mut answers = futures::stream::iter(keys.iter())
        .map(|key| {
            let (cache, ask) = (&cache, &ask);
            async move {
                let input = DeriveInput::Entry { namespace: args.ns.clone(), key: key.clone() };
                (key, one(cache, &input, ask).await)
            }
        })
        .buffer_unordered(parallel);
    let mut s = Summary { namespace: args.ns.clone(), recipe: args.recipe.clone(), ..Summary::default() };
    while let Some((key, outcome)) = answers.next().await {
        progress.inc(1);
        s.inputs += 1;
        match outcome? {
            Outcome::Made => s.made += 1,
            Outcome::Already => s.already += 1,
            Outcome::Unsupported => s.unsupported += 1,
            Outcome::Failed(why) => {
                s.failed += 1;
                if s.failures.len() < 20 {
                    s.failures.push((String::from_utf8_lossy(key).into_owned(), why));
                }
            }
        }
    }
    progress.finish_and_clear();
    cache.settle().await?;
    s.seconds = t0.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!(
            "{} of {} in {}: {} made, {} already there, {} failed, {} not taken by the recipe ({:.1} s)",
            s.recipe, s.inputs, s.namespace, s.made, s.already, s.failed, s.unsupported, s.seconds
        );
        for (key, why) in &s.failures {
            println!("  failed: {key}: {why}");
        }
    }
    Ok(if s.failed > 0 { 1 } else { 0 })
}

/// Every key of `namespace` under `prefix`.
async fn list_keys(cache: &Cache, namespace: &str, prefix: &str) -> Result<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    let mut after = None;
    loop {
        let req = ListRequest { prefix: prefix.as_bytes().to_vec(), delimiter: None, after, limit: PAGE_KEYS };
        let page = cache.list(namespace, req).await.with_context(|| format!("cannot list namespace {namespace}"))?;
        keys.extend(page.items.into_iter().map(|i| i.key));
        if !page.is_truncated || page.last.is_none() {
            return Ok(keys);
        }
        after = page.last;
    }
}

/// Asks for one derivation, waiting for it; a refusal that is the input's is an outcome, any
/// other error ends the command.
async fn one(cache: &Cache, input: &DeriveInput, ask: &DeriveAsk) -> Result<Outcome> {
    match cache.derive(input, ask).await {
        Ok(Derived::Ready { is_new: true, .. }) => Ok(Outcome::Made),
        Ok(Derived::Ready { is_new: false, .. }) => Ok(Outcome::Already),
        Ok(Derived::Failed { is_unsupported: true, .. }) => Ok(Outcome::Unsupported),
        Ok(Derived::Failed { reason, .. }) => Ok(Outcome::Failed(reason)),
        Ok(Derived::Pending { .. } | Derived::Busy { .. }) => Ok(Outcome::Failed("not made in time".into())),
        Err(Error::Recipe { fault: RecipeFault::Unsupported, .. }) => Ok(Outcome::Unsupported),
        Err(e @ Error::Recipe { .. }) => Err(e.into()),
        Err(e) => Ok(Outcome::Failed(e.to_string())),
    }
}
