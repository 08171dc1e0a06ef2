//! `verify` and `verify --repair`: exit codes 0 and 3, and what is reported and repaired.

use std::io::{Read, Seek, SeekFrom, Write};

use tiercache_testkit::{Source, bytes};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_flipped_byte_repairs_it_and_the_entry_is_fetched_again() {
    let d = dirs();
    let src = Source::start().await;
    let objs: Vec<Vec<u8>> = (0..3).map(|i| bytes(40 + i, 200_000 + i as usize)).collect();
    for (i, o) in objs.iter().enumerate() {
        src.put(&format!("o{i}"), o.clone());
    }
    tcr(&d.data, &["ns", "create", "v", "--source", &src.url()]).ok();
    let out = d.tmp.path().join("out");
    let out_s = out.to_str().unwrap();
    for i in 0..3 {
        tcr(&d.data, &["get", &format!("v/o{i}"), "-o", out_s, "--revalidate-after", "1h"]).ok();
    }

    let clean = tcr(&d.data, &["verify"]).ok();
    assert!(clean.stdout.contains("checked 3 blobs"), "{}", clean.stdout);
    assert!(clean.stdout.contains("clean"), "{}", clean.stdout);

    // Flip one byte in the middle of o1's blob.
    let victim = hex_of(&objs[1]);
    let path = blob_path(&d.data, &victim);
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(100_000)).unwrap();
    let mut byte = [0u8];
    f.read_exact(&mut byte).unwrap();
    f.seek(SeekFrom::Start(100_000)).unwrap();
    f.write_all(&[byte[0] ^ 0x5a]).unwrap();
    drop(f);

    let damaged = tcr(&d.data, &["verify"]).expect_code(3);
    assert!(damaged.stdout.contains(&format!("corrupt: sha256:{victim}")), "{}", damaged.stdout);
    assert!(damaged.stdout.contains("verify --repair"), "{}", damaged.stdout);
    let j = tcr(&d.data, &["verify", "--json"]).expect_code(3).json();
    assert_eq!(j["corrupt"], serde_json::json!([format!("sha256:{victim}")]));
    assert_eq!(j["repaired"], false);
    for list in ["missing", "untracked", "wrong_size", "strays", "stale_temp", "index_problems"] {
        assert_eq!(j[list].as_array().map(Vec::len), Some(0), "{list}: {j}");
    }
    assert!(path.exists(), "verify without --repair changes nothing");

    let repaired = tcr(&d.data, &["verify", "--repair"]).ok();
    assert!(repaired.stdout.contains("repaired"), "{}", repaired.stdout);
    assert!(!path.exists(), "the corrupt file is deleted");
    let again = tcr(&d.data, &["verify"]).ok();
    assert!(again.stdout.contains("clean"), "{}", again.stdout);
    assert!(again.stdout.contains("checked 2 blobs"), "{}", again.stdout);

    // The entry is fetched again from its source, with the right bytes; the others are not.
    let counts: Vec<u64> = (0..3).map(|i| src.counts(&format!("o{i}")).full).collect();
    assert_eq!(counts, [1, 1, 1]);
    for (i, o) in objs.iter().enumerate() {
        tcr(&d.data, &["get", &format!("v/o{i}"), "-o", out_s, "--revalidate-after", "1h"]).ok();
        assert!(std::fs::read(&out).unwrap() == *o, "v/o{i} has the wrong bytes");
    }
    let counts: Vec<u64> = (0..3).map(|i| src.counts(&format!("o{i}")).full).collect();
    assert_eq!(counts, [1, 2, 1]);
    assert_eq!(hex_of(&std::fs::read(&path).unwrap()), victim, "the blob is back, intact");
    tcr(&d.data, &["verify"]).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_and_repairs_unknown_files_under_blobs() {
    let d = dirs();
    let src = Source::start().await;
    let known = bytes(50, 30_000);
    src.put("known", known.clone());
    tcr(&d.data, &["ns", "create", "u", "--source", &src.url()]).ok();
    let out = d.tmp.path().join("out");
    tcr(&d.data, &["get", "u/known", "-o", out.to_str().unwrap()]).ok();
    tcr(&d.data, &["verify"]).ok();

    // A file whose name is not a digest, and a valid blob in the wrong fan-out directory.
    let stray = d.data.join("blobs/sha256/ab/notes.txt");
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, b"not a blob").unwrap();
    let misplaced_bytes = bytes(51, 4000);
    let mhex = hex_of(&misplaced_bytes);
    let wrong_fan = if &mhex[..2] == "00" { "01" } else { "00" };
    let misplaced = d.data.join("blobs/sha256").join(wrong_fan).join(&mhex);
    std::fs::create_dir_all(misplaced.parent().unwrap()).unwrap();
    std::fs::write(&misplaced, &misplaced_bytes).unwrap();
    // A correctly named and placed file the index does not know.
    let untracked = bytes(52, 5000);
    let uhex = hex_of(&untracked);
    let upath = blob_path(&d.data, &uhex);
    std::fs::create_dir_all(upath.parent().unwrap()).unwrap();
    std::fs::write(&upath, &untracked).unwrap();

    let r = tcr(&d.data, &["verify"]).expect_code(3);
    assert!(r.stdout.contains("stray files under blobs/: 2"), "{}", r.stdout);
    assert!(r.stdout.contains("untracked (file, not indexed): 1"), "{}", r.stdout);
    let j = tcr(&d.data, &["verify", "--json"]).expect_code(3).json();
    let strays: Vec<&str> = j["strays"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(strays.contains(&stray.to_str().unwrap()), "{j}");
    assert!(strays.contains(&misplaced.to_str().unwrap()), "{j}");
    assert_eq!(j["untracked"], serde_json::json!([format!("sha256:{uhex}")]));
    assert_eq!(j["corrupt"].as_array().unwrap().len(), 0);

    let r = tcr(&d.data, &["verify", "--repair"]).ok();
    assert!(r.stdout.contains("repaired"), "{}", r.stdout);
    assert!(!stray.exists() && !misplaced.exists(), "stray files are removed");
    assert!(upath.exists(), "an intact untracked blob is adopted, not deleted");
    let r = tcr(&d.data, &["verify"]).ok();
    assert!(r.stdout.contains("clean"), "{}", r.stdout);
    assert!(r.stdout.contains("checked 2 blobs"), "{}", r.stdout);

    // The adopted blob is readable by digest and counted.
    let got = tcr(&d.data, &["get", &format!("sha256:{uhex}")]).ok();
    assert!(got.raw_stdout == untracked);
    assert_eq!(tcr(&d.data, &["stats", "--json"]).ok().json()["n_blobs"], 2);

    // An unknown file with bytes that do not match its name is untracked and corrupt: deleted.
    let liar = blob_path(&d.data, &hex_of(b"something else"));
    std::fs::create_dir_all(liar.parent().unwrap()).unwrap();
    std::fs::write(&liar, b"not what the name says").unwrap();
    let j = tcr(&d.data, &["verify", "--json"]).expect_code(3).json();
    assert_eq!(j["corrupt"].as_array().unwrap().len(), 1, "{j}");
    tcr(&d.data, &["verify", "--repair"]).ok();
    assert!(!liar.exists());
    tcr(&d.data, &["verify"]).ok();
    assert_eq!(tcr(&d.data, &["stats", "--json"]).ok().json()["n_blobs"], 2);
}
