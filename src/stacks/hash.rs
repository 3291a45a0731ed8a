//! Fast hashing for the index's maps. Keys are paths and git ids from one repository, hashed
//! tens of thousands of times per snapshot; SipHash's resistance to crafted collisions buys
//! nothing here and costs a noticeable share of the warm path, so the maps use the Fx hash
//! (rustc's, from `rustc-hash`).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use git2::Oid;

pub type Map<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;
pub type Set<K> = HashSet<K, rustc_hash::FxBuildHasher>;

/// A git id as a map key: compared as bytes in Rust, where `Oid`'s own `==` is a call into
/// libgit2 that the compiler cannot inline.
#[derive(Debug, Clone, Copy)]
pub struct Id(pub Oid);

impl PartialEq for Id {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes() == other.0.as_bytes()
    }
}

impl Eq for Id {}

impl Hash for Id {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.as_bytes());
    }
}
