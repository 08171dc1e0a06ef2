//! Defining namespaces: `ns delete` leaves the index and the definition files agreeing when one
//! of its steps fails (a failure injected into the index by a trigger, or a definition file that
//! cannot be removed), and a retry finishes it.

use futures::StreamExt;
use tiercache_engine::{Cache, CacheConfig, Error};

use crate::collect;

fn body(b: &'static [u8]) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures::stream::iter([Ok(bytes::Bytes::from_static(b))]).boxed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_whose_index_step_fails_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cache = Cache::open(CacheConfig::new(&data)).await.unwrap();
    cache.create_namespace("gone", None, &Default::default()).await.unwrap();
    cache.put_entry("gone", b"k", body(b"only copy")).await.unwrap();
    let def = data.join("namespaces/gone.json");
    assert!(def.exists());
    // The index refuses the delete, as a full disk would.
    let db = rusqlite::Connection::open(data.join("index.db")).unwrap();
    db.execute_batch("CREATE TRIGGER refuse BEFORE DELETE ON namespaces BEGIN SELECT RAISE(ABORT, 'injected'); END;")
        .unwrap();
    assert!(cache.delete_namespace("gone").await.is_err());
    // Both still say the namespace exists, and it is served.
    assert!(def.exists(), "the definition file is kept when the index step fails");
    assert!(cache.namespace("gone").await.unwrap().is_some());
    let read = cache.read_entry("gone", "k").await.unwrap();
    assert_eq!(collect(read, None).await.unwrap(), b"only copy");
    // Once the index can change again, the delete goes through, both at once.
    db.execute_batch("DROP TRIGGER refuse;").unwrap();
    assert!(cache.delete_namespace("gone").await.unwrap().is_some());
    assert!(!def.exists());
    assert!(cache.namespace("gone").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_whose_definition_cannot_be_removed_is_finished_by_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cache = Cache::open(CacheConfig::new(&data)).await.unwrap();
    cache.create_namespace("gone", None, &Default::default()).await.unwrap();
    let def = data.join("namespaces/gone.json");
    // A definition "file" that cannot be removed as a file (tests run as root, so permissions
    // would not stop it).
    std::fs::remove_file(&def).unwrap();
    std::fs::create_dir_all(def.join("stuck")).unwrap();
    let e = cache.delete_namespace("gone").await.unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("delete it again"), "{e}");
    // The namespace is no longer served (the index step came first) ...
    assert!(matches!(cache.read_entry("gone", "k").await, Err(Error::NoNamespace(_))));
    // ... and deleting it again removes what is left of its definition.
    std::fs::remove_dir_all(&def).unwrap();
    std::fs::write(&def, br#"{"name":"gone","source":null}"#).unwrap();
    assert!(cache.delete_namespace("gone").await.unwrap().is_none());
    assert!(!def.exists());
}
