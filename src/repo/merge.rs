//! A pull request's commits in the mirror: the merge base of its head and base, and the
//! merge of the head into the base that a merge would produce (made locally, so it works
//! with any git server, and the same on every instance).

use anyhow::{Context, Result};
use git2::{Oid, Repository, Signature, Time};

/// The best common ancestor of two commits.
pub fn merge_base(repo: &Repository, a: Oid, b: Oid) -> Result<Oid> {
    repo.merge_base(a, b)
        .with_context(|| format!("no merge base between {a} and {b}"))
}

/// Merges `head` into `base` and stores the result as a commit with parents `[base, head]`
/// under `reference`. `None` when the merge conflicts. The author, committer and time are
/// fixed by the inputs (the head's commit time), so every instance makes the same commit.
pub fn merge_commit(
    repo: &Repository,
    base: Oid,
    head: Oid,
    reference: &str,
    message: &str,
) -> Result<Option<Oid>> {
    let base_commit = repo.find_commit(base)?;
    let head_commit = repo.find_commit(head)?;
    if repo.graph_descendant_of(head, base)? {
        // A head that already contains the base is what a merge would produce.
        repo.reference(reference, head, true, "tidemark: pull request merge")?;
        return Ok(Some(head));
    }
    let mut index = repo
        .merge_commits(&base_commit, &head_commit, None)
        .with_context(|| format!("merging {head} into {base}"))?;
    if index.has_conflicts() {
        return Ok(None);
    }
    let tree_id = index.write_tree_to(repo)?;
    let tree = repo.find_tree(tree_id)?;
    let when = head_commit.committer().when();
    let signature = Signature::new(
        "Tidemark",
        "tidemark@localhost",
        &Time::new(when.seconds(), when.offset_minutes()),
    )?;
    let id = repo.commit(
        None,
        &signature,
        &signature,
        message,
        &tree,
        &[&base_commit, &head_commit],
    )?;
    repo.reference(reference, id, true, "tidemark: pull request merge")?;
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(repo: &Repository, parent: Option<Oid>, files: &[(&str, &str)], time: i64) -> Oid {
        let mut builder = repo.treebuilder(None).expect("treebuilder");
        let base_tree = parent.map(|p| repo.find_commit(p).expect("parent").tree().expect("tree"));
        if let Some(tree) = &base_tree {
            for entry in tree.iter() {
                builder
                    .insert(entry.name().expect("name"), entry.id(), entry.filemode())
                    .expect("insert");
            }
        }
        for (name, content) in files {
            let blob = repo.blob(content.as_bytes()).expect("blob");
            builder.insert(name, blob, 0o100644).expect("insert");
        }
        let tree = repo
            .find_tree(builder.write().expect("write"))
            .expect("tree");
        let sig = Signature::new("t", "t@x", &Time::new(time, 0)).expect("sig");
        let parents: Vec<git2::Commit> = parent
            .map(|p| repo.find_commit(p).expect("parent"))
            .into_iter()
            .collect();
        let refs: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(None, &sig, &sig, "c", &tree, &refs)
            .expect("commit")
    }

    #[test]
    fn the_merge_is_the_same_commit_every_time_and_conflicts_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_bare(dir.path()).expect("init");
        let root = commit(&repo, None, &[("a.tf", "a"), ("b.tf", "b")], 1);
        let base = commit(&repo, Some(root), &[("a.tf", "a2")], 2);
        let head = commit(&repo, Some(root), &[("b.tf", "b2")], 3);
        assert_eq!(merge_base(&repo, base, head).expect("base"), root);
        let one = merge_commit(&repo, base, head, "refs/tidemark/pull/1/merge", "m")
            .expect("merge")
            .expect("no conflict");
        let two = merge_commit(&repo, base, head, "refs/tidemark/pull/1/merge", "m")
            .expect("merge")
            .expect("no conflict");
        assert_eq!(one, two);
        let merged = repo.find_commit(one).expect("commit");
        assert_eq!(merged.parent_ids().collect::<Vec<_>>(), vec![base, head]);
        let tree = merged.tree().expect("tree");
        let content = |name: &str| {
            let id = tree.get_name(name).expect("entry").id();
            String::from_utf8(repo.find_blob(id).expect("blob").content().to_vec()).expect("utf8")
        };
        assert_eq!(
            (content("a.tf"), content("b.tf")),
            ("a2".into(), "b2".into())
        );

        let clash = commit(&repo, Some(root), &[("a.tf", "a3")], 4);
        assert_eq!(
            merge_commit(&repo, base, clash, "refs/tidemark/pull/2/merge", "m").expect("merge"),
            None
        );
        // A head that contains the base needs no merge commit.
        let ahead = commit(&repo, Some(base), &[("c.tf", "c")], 5);
        assert_eq!(
            merge_commit(&repo, base, ahead, "refs/tidemark/pull/3/merge", "m").expect("merge"),
            Some(ahead)
        );
    }
}
