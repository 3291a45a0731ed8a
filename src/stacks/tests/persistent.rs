//! The index on disk (issue 13): a second process starts warm from it, gets exactly the answer
//! a cold analysis gives, and a damaged file is ignored and rewritten, never trusted.

use super::*;

/// A repository with Terraform and Terragrunt stacks, modules, environments and an edge, so
/// every kind of fact goes through the file.
fn repository() -> (TestRepo, Oid, Oid) {
    let mut t = TestRepo::new();
    t.write(
        "net/main.tf",
        "terraform {\n  backend \"s3\" {\n    bucket = \"b\"\n    key = \"net\"\n  }\n}\n",
    );
    t.write(
        "app/stack.hcl",
        "stack {\n  depends_on = [\"../net\"]\n  tags = [\"prod\"]\n}\nenvironment \"prod\" {\n  var_files = [\"prod.tfvars\"]\n}\n",
    );
    t.write("app/prod.tfvars", "x = 1\n");
    t.write(
        "app/main.tf",
        "module \"m\" {\n  source = \"../modules/m\"\n}\nlocals {\n  t = file(\"${path.module}/t.json\")\n}\n",
    );
    t.write("app/t.json", "{}");
    t.write("modules/m/main.tf", "variable \"v\" {}\n");
    t.write("live/root.hcl", "locals {}\n");
    t.write(
        "live/unit/terragrunt.hcl",
        "include \"root\" {\n  path = find_in_parent_folders(\"root.hcl\")\n}\nterraform {\n  source = \"../../modules//m\"\n}\n",
    );
    let base = t.commit();
    t.write(
        "modules/m/main.tf",
        "variable \"v\" {}\nvariable \"w\" {}\n",
    );
    let head = t.commit();
    (t, base, head)
}

#[test]
fn a_second_process_is_warm_from_the_file_and_gets_the_same_answer() {
    let (t, base, head) = repository();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("index").join("repo.idx");
    let cold = affected(&t.repo, Some(base), head, None).expect("affected");
    let cold_stacks = discover(&t.repo, head, None).expect("discover");

    let mut first = Index::persistent(path.clone());
    assert_eq!(
        affected(&t.repo, Some(base), head, Some(&mut first)).expect("affected"),
        cold
    );
    assert!(first.save().expect("save"), "a new index is written");
    assert!(!first.save().expect("save"), "nothing new, nothing written");

    // A new process: everything it needs is in the file, so it reads no tree and parses no
    // file (it learns nothing, and has nothing to save).
    let mut second = Index::persistent(path.clone());
    assert_eq!(
        affected(&t.repo, Some(base), head, Some(&mut second)).expect("affected"),
        cold
    );
    assert_eq!(
        discover(&t.repo, head, Some(&mut second)).expect("discover"),
        cold_stacks
    );
    assert!(
        !second.save().expect("save"),
        "the second process parsed nothing"
    );
    assert!(render(&cold).contains("live/unit"), "{}", render(&cold));
}

#[test]
fn a_damaged_index_file_is_ignored_and_rewritten() {
    let (t, base, head) = repository();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("repo.idx");
    let cold = affected(&t.repo, Some(base), head, None).expect("affected");
    let mut index = Index::persistent(path.clone());
    affected(&t.repo, Some(base), head, Some(&mut index)).expect("affected");
    index.save().expect("save");
    let good = std::fs::read(&path).expect("file");

    for damaged in [
        good[..good.len() / 2].to_vec(),
        {
            let mut flipped = good.clone();
            let at = flipped.len() - 10;
            flipped[at] ^= 0x55;
            flipped
        },
        b"not an index".to_vec(),
        Vec::new(),
    ] {
        std::fs::write(&path, &damaged).expect("file");
        let mut index = Index::persistent(path.clone());
        assert_eq!(
            affected(&t.repo, Some(base), head, Some(&mut index)).expect("affected"),
            cold
        );
        assert!(index.save().expect("save"), "a damaged file is replaced");
        assert_eq!(std::fs::read(&path).expect("file").len(), good.len());
    }
}

#[test]
fn an_index_that_cannot_be_written_is_an_error_of_the_save_only() {
    let (t, base, head) = repository();
    let dir = tempfile::tempdir().expect("tempdir");
    // The index's directory is a file: nothing can be created below it.
    std::fs::write(dir.path().join("blocked"), "").expect("file");
    let mut index = Index::persistent(dir.path().join("blocked").join("repo.idx"));
    let cold = affected(&t.repo, Some(base), head, None).expect("affected");
    assert_eq!(
        affected(&t.repo, Some(base), head, Some(&mut index)).expect("affected"),
        cold
    );
    let error = format!("{:#}", index.save().expect_err("a save that cannot write"));
    assert!(error.contains("blocked"), "{error}");
}
