//! The inode table: which FUSE node id stands for which path of the merged
//! view, and where that path lives (the upper dir, lower layers or both).
//!
//! Nodes are named by parent and name rather than by full path, so renaming
//! a directory moves its whole subtree by changing one node. A node's
//! layer information is computed at lookup and kept current by the
//! operations that change it (copy-up, create, unlink, rename), since every
//! change to the upper dir goes through this filesystem.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// The root's node id, as FUSE fixes it.
pub const ROOT: u64 = 1;

/// Where one path of the merged view lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// It exists in the upper dir (as itself, not as a whiteout).
    pub upper: bool,
    /// The lower layers (indices into the top-first list) that contribute:
    /// for a directory every layer down to the first opaque one where it is
    /// a directory; for anything else the one layer it comes from (empty
    /// once it is in the upper dir, where the lower copy no longer counts).
    pub lowers: Vec<usize>,
    /// It is a directory.
    pub is_dir: bool,
}

/// One node the kernel knows.
#[derive(Debug, Clone)]
pub struct Node {
    pub parent: u64,
    pub name: OsString,
    pub place: Place,
    /// Lookups the kernel holds (FUSE's nlookup); the node goes at zero.
    pub lookups: u64,
    /// Removed from the namespace while the kernel still holds it.
    pub unlinked: bool,
    /// Other names of the same upper file (hard links), so every name of
    /// it is one node to the kernel: one inode, one page cache, one size.
    pub aliases: Vec<(u64, OsString)>,
    /// The upper file's inode number, for files with several links.
    pub upper_ino: Option<u64>,
}

/// Node ids, their nodes, and the (parent, name) index.
#[derive(Debug)]
pub struct Table {
    nodes: HashMap<u64, Node>,
    names: HashMap<(u64, OsString), u64>,
    /// Upper inode number → node, for files with several links.
    by_inode: HashMap<u64, u64>,
    next: u64,
}

impl Table {
    /// A table holding only the root.
    pub fn new(root: Place) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                parent: ROOT,
                name: OsString::new(),
                place: root,
                lookups: 1,
                unlinked: false,
                aliases: Vec::new(),
                upper_ino: None,
            },
        );
        Table {
            nodes,
            names: HashMap::new(),
            by_inode: HashMap::new(),
            next: ROOT + 1,
        }
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    /// The child `name` of `parent`, if the kernel already has a node for it.
    pub fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.names.get(&(parent, name.to_os_string())).copied()
    }

    /// The path of `ino` relative to the roots of the layers ("" for the
    /// root); None for a node that is gone.
    pub fn rel_path(&self, ino: u64) -> Option<PathBuf> {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let n = self.nodes.get(&cur)?;
            parts.push(n.name.clone());
            cur = n.parent;
        }
        let mut p = PathBuf::new();
        for part in parts.iter().rev() {
            p.push(part);
        }
        Some(p)
    }

    /// Records a lookup of `name` in `parent`: the existing node (its place
    /// refreshed), the node of another link of the same upper file
    /// (`upper_ino`, given for files with several links), or a new one.
    /// Returns its id.
    pub fn remember(
        &mut self,
        parent: u64,
        name: &OsStr,
        place: Place,
        upper_ino: Option<u64>,
    ) -> u64 {
        if let Some(ino) = self.child(parent, name) {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.place = place;
                n.lookups += 1;
                return ino;
            }
        }
        if let Some(uino) = upper_ino {
            if let Some(&ino) = self.by_inode.get(&uino) {
                if let Some(n) = self.nodes.get_mut(&ino) {
                    if !n.unlinked {
                        n.aliases.push((parent, name.to_os_string()));
                        n.lookups += 1;
                        self.names.insert((parent, name.to_os_string()), ino);
                        return ino;
                    }
                }
            }
        }
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(
            ino,
            Node {
                parent,
                name: name.to_os_string(),
                place,
                lookups: 1,
                unlinked: false,
                aliases: Vec::new(),
                upper_ino,
            },
        );
        self.names.insert((parent, name.to_os_string()), ino);
        if let Some(uino) = upper_ino {
            self.by_inode.insert(uino, ino);
        }
        ino
    }

    /// Notes that `ino` is the upper file `upper_ino`, which has several
    /// links (a link was just made to it).
    pub fn set_upper_ino(&mut self, ino: u64, upper_ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.upper_ino = Some(upper_ino);
            self.by_inode.insert(upper_ino, ino);
        }
    }

    /// Drops `n` of the kernel's lookups of `ino`; at zero the node goes.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        let gone = match self.nodes.get_mut(&ino) {
            Some(node) => {
                node.lookups = node.lookups.saturating_sub(n);
                node.lookups == 0
            }
            None => false,
        };
        if gone {
            if let Some(node) = self.nodes.remove(&ino) {
                for key in std::iter::once((node.parent, node.name)).chain(node.aliases) {
                    if self.names.get(&key) == Some(&ino) {
                        self.names.remove(&key);
                    }
                }
                if let Some(u) = node.upper_ino {
                    if self.by_inode.get(&u) == Some(&ino) {
                        self.by_inode.remove(&u);
                    }
                }
            }
        }
    }

    /// Takes `name` out of `parent` (unlink, rmdir, or the target of a
    /// rename): the node lives on under another link's name, or unnamed
    /// until the kernel forgets it.
    pub fn detach(&mut self, parent: u64, name: &OsStr) {
        let key = (parent, name.to_os_string());
        if let Some(ino) = self.names.remove(&key) {
            if let Some(n) = self.nodes.get_mut(&ino) {
                if (n.parent, &n.name) == (key.0, &key.1) {
                    match n.aliases.pop() {
                        Some((p, nm)) => {
                            n.parent = p;
                            n.name = nm;
                        }
                        None => {
                            n.unlinked = true;
                            if let Some(u) = n.upper_ino {
                                if self.by_inode.get(&u) == Some(&ino) {
                                    self.by_inode.remove(&u);
                                }
                            }
                        }
                    }
                } else {
                    n.aliases.retain(|a| *a != key);
                }
            }
        }
    }

    /// Moves the node named `name` in `parent` to `newname` in `newparent`
    /// (whatever was there is detached first).
    pub fn rename(&mut self, parent: u64, name: &OsStr, newparent: u64, newname: &OsStr) {
        self.detach(newparent, newname);
        let old = (parent, name.to_os_string());
        let new = (newparent, newname.to_os_string());
        if let Some(ino) = self.names.remove(&old) {
            if let Some(n) = self.nodes.get_mut(&ino) {
                if (n.parent, &n.name) == (old.0, &old.1) {
                    n.parent = newparent;
                    n.name = newname.to_os_string();
                } else {
                    for a in n.aliases.iter_mut().filter(|a| **a == old) {
                        *a = new.clone();
                    }
                }
            }
            self.names.insert(new, ino);
        }
    }

    /// Swaps two names (RENAME_EXCHANGE).
    pub fn exchange(&mut self, a: (u64, &OsStr), b: (u64, &OsStr)) {
        let ka = (a.0, a.1.to_os_string());
        let kb = (b.0, b.1.to_os_string());
        let ia = self.names.remove(&ka);
        let ib = self.names.remove(&kb);
        if let Some(ia) = ia {
            if let Some(n) = self.nodes.get_mut(&ia) {
                n.parent = b.0;
                n.name = b.1.to_os_string();
            }
            self.names.insert(kb, ia);
        }
        if let Some(ib) = ib {
            if let Some(n) = self.nodes.get_mut(&ib) {
                n.parent = a.0;
                n.name = a.1.to_os_string();
            }
            self.names.insert(ka, ib);
        }
    }
}
