//! The actor table: every actor of the cluster with Ray's states
//! (DEPENDENCIES_UNREADY, PENDING_CREATION, ALIVE, RESTARTING, DEAD), its
//! address while it lives, and why it died. Names are unique per namespace among
//! actors that are not DEAD. The owner of an actor creates and restarts it and
//! reports each step here; the GCS ends the actors of a finished job.

use std::collections::{BTreeMap, HashMap};

use ray_common::time::now_ms;
use ray_proto::rpc::ActorTableData;

pub const DEPENDENCIES_UNREADY: &str = "DEPENDENCIES_UNREADY";
pub const PENDING_CREATION: &str = "PENDING_CREATION";
pub const ALIVE: &str = "ALIVE";
pub const RESTARTING: &str = "RESTARTING";
pub const DEAD: &str = "DEAD";

/// Dead actors kept for `ray list actors` (Ray keeps 1000 by default).
pub const MAX_DEAD_ACTORS: usize = 1000;

/// Why a registration was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ActorError {
    /// The name is taken in the namespace by an actor that is not dead.
    #[error("The name {name} (namespace={namespace}) is already taken. Please use a different name or get the existing actor using ray.get_actor('{name}', namespace='{namespace}')")]
    NameTaken {
        /// The name.
        name: String,
        /// Its namespace.
        namespace: String,
    },
    /// A malformed field.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The id is registered already.
    #[error("actor {0} is already registered")]
    Exists(String),
}

/// The table.
#[derive(Debug, Default)]
pub struct Actors {
    by_id: HashMap<String, ActorTableData>,
    /// (namespace, name) -> id, for actors that are not DEAD.
    names: BTreeMap<(String, String), String>,
    dead_order: Vec<String>,
    /// Workers known to have exited (owners that will report nothing more).
    dead_owners: std::collections::HashSet<String>,
    /// Actors changed (or dropped) since they were last written to storage.
    pub(crate) dirty: std::collections::HashSet<String>,
}

fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Actors {
    /// Records a new actor, PENDING_CREATION. With `get_if_exists`, a live
    /// actor of the same name is returned instead of an error.
    pub fn register(&mut self, mut a: ActorTableData, get_if_exists: bool) -> Result<Option<ActorTableData>, ActorError> {
        if !valid_id(&a.actor_id) {
            return Err(ActorError::Invalid("actor_id: expected 32 hex digits"));
        }
        if a.name.len() > 1024 || a.namespace.len() > 1024 || a.class_name.len() > 1024 {
            return Err(ActorError::Invalid("name, namespace or class_name: longer than 1024 bytes"));
        }
        if self.by_id.contains_key(&a.actor_id) {
            return Err(ActorError::Exists(a.actor_id));
        }
        if !a.name.is_empty() {
            let key = (a.namespace.clone(), a.name.clone());
            if let Some(existing) = self.names.get(&key).and_then(|id| self.by_id.get(id)) {
                if get_if_exists {
                    return Ok(Some(existing.clone()));
                }
                return Err(ActorError::NameTaken { name: a.name, namespace: a.namespace });
            }
            self.names.insert(key, a.actor_id.clone());
        }
        if a.state != DEPENDENCIES_UNREADY {
            a.state = PENDING_CREATION.into();
        }
        a.start_time_ms = now_ms();
        a.address.clear();
        self.dirty.insert(a.actor_id.clone());
        self.by_id.insert(a.actor_id.clone(), a);
        Ok(None)
    }

    /// Applies an update from the owner. A DEAD actor stays DEAD; returns the
    /// state after the update and whether `ray.kill` forbade restarts.
    pub fn update(&mut self, u: &ActorTableData) -> Option<(String, bool)> {
        let a = self.by_id.get_mut(&u.actor_id)?;
        if a.state == DEAD {
            return Some((a.state.clone(), a.no_restart));
        }
        self.dirty.insert(u.actor_id.clone());
        if !u.state.is_empty() {
            a.state = u.state.clone();
        }
        if !u.address.is_empty() {
            // ALIVE there, or being created there (so ray.kill can reach it).
            a.address = u.address.clone();
            a.node_id = u.node_id.clone();
            a.worker_id = u.worker_id.clone();
            a.pid = u.pid;
        } else if u.state == RESTARTING || u.state == DEAD {
            a.address.clear();
        }
        a.num_restarts = a.num_restarts.max(u.num_restarts);
        if !u.death_cause.is_empty() {
            a.death_cause = u.death_cause.clone();
        }
        if !u.creation_error.is_empty() {
            a.creation_error = u.creation_error.clone();
        }
        let (state, no_restart) = (a.state.clone(), a.no_restart);
        if state == DEAD {
            self.died(&u.actor_id);
        }
        Some((state, no_restart))
    }

    /// Marks an actor dead with `cause` (kept if it already has one).
    pub fn kill(&mut self, id: &str, cause: &str) -> bool {
        let Some(a) = self.by_id.get_mut(id) else { return false };
        if a.state == DEAD {
            return false;
        }
        a.state = DEAD.into();
        a.no_restart = true;
        a.address.clear();
        self.dirty.insert(id.to_string());
        if a.death_cause.is_empty() {
            a.death_cause = cause.to_string();
        }
        self.died(id);
        true
    }

    fn died(&mut self, id: &str) {
        let Some(a) = self.by_id.get_mut(id) else { return };
        a.end_time_ms = now_ms();
        if !a.name.is_empty() {
            let key = (a.namespace.clone(), a.name.clone());
            if self.names.get(&key).is_some_and(|x| x == id) {
                self.names.remove(&key);
            }
        }
        self.dead_order.push(id.to_string());
        if self.dead_order.len() > MAX_DEAD_ACTORS {
            let old = self.dead_order.remove(0);
            self.by_id.remove(&old);
            self.dirty.insert(old);
        }
    }

    /// `ray.kill(no_restart=True)` comes first: the actor is DEAD before its
    /// worker is stopped, so its owner does not restart it. Returns its address.
    pub fn forbid_restart(&mut self, id: &str, cause: &str) -> Option<String> {
        let addr = self.by_id.get(id)?.address.clone();
        if let Some(a) = self.by_id.get_mut(id) {
            a.no_restart = true;
        }
        let cause = if cause.is_empty() { "The actor is dead because it was killed by `ray.kill`." } else { cause };
        self.kill(id, cause);
        Some(addr)
    }

    /// The job ended: its actors that are not detached die with their owner.
    /// Returns (id, worker address) of each actor that died.
    pub fn job_finished(&mut self, job_id: &str) -> Vec<(String, String)> {
        let ended: Vec<(String, String, &str)> = self
            .by_id
            .values()
            .filter(|a| a.job_id == job_id && a.state != DEAD && (!a.detached || a.state != ALIVE))
            .map(|a| {
                let cause = if a.detached {
                    "The actor is dead because its owner died before it was created (its job finished)."
                } else {
                    "The actor is dead because its owner has died (its job finished)."
                };
                (a.actor_id.clone(), a.address.clone(), cause)
            })
            .collect();
        for (id, _, cause) in &ended {
            self.kill(id, cause);
        }
        ended.into_iter().map(|(id, addr, _)| (id, addr)).collect()
    }

    /// A worker process exited. Actors it owned die (a detached one that is
    /// already alive lives on without its owner); an alive detached actor that
    /// ran in it dies too when its owner is gone (nobody is left to restart
    /// it). `dead_jobs` are the jobs that ended. Returns the actors that died.
    pub fn worker_died(&mut self, worker_id: &str, dead_jobs: &std::collections::HashSet<String>) -> Vec<String> {
        if worker_id.is_empty() {
            return Vec::new();
        }
        self.dead_owners.insert(worker_id.to_string());
        if self.dead_owners.len() > 100_000 {
            self.dead_owners.clear();
            self.dead_owners.insert(worker_id.to_string());
        }
        let mut ended = Vec::new();
        for a in self.by_id.values().filter(|a| a.state != DEAD) {
            let owned = a.owner_worker_id == worker_id;
            let owner_gone = self.dead_owners.contains(&a.owner_worker_id) || dead_jobs.contains(&a.job_id);
            if owned && !(a.detached && a.state == ALIVE) {
                let cause = if a.detached {
                    "The actor is dead because its owner died before it was created."
                } else {
                    "The actor is dead because its owner has died."
                };
                ended.push((a.actor_id.clone(), cause));
            } else if a.worker_id == worker_id && a.detached && owner_gone {
                ended.push((a.actor_id.clone(), "The actor is dead because its worker died and its owner, which restarts it, is gone."));
            }
        }
        for (id, cause) in &ended {
            self.kill(id, cause);
        }
        ended.into_iter().map(|(id, _)| id).collect()
    }

    /// Rebuilds the table from stored records (a restarted GCS): names of
    /// actors that are not DEAD, and the dead in the order they died.
    pub fn restore(&mut self, actors: Vec<ActorTableData>) {
        let mut dead: Vec<(u64, String)> = Vec::new();
        for a in actors {
            if a.state == DEAD {
                dead.push((a.end_time_ms, a.actor_id.clone()));
            } else if !a.name.is_empty() {
                self.names.insert((a.namespace.clone(), a.name.clone()), a.actor_id.clone());
            }
            self.by_id.insert(a.actor_id.clone(), a);
        }
        dead.sort();
        self.dead_order = dead.into_iter().map(|(_, id)| id).collect();
    }

    /// One actor by id.
    pub fn get(&self, id: &str) -> Option<&ActorTableData> {
        self.by_id.get(id)
    }

    /// The live actor of `name` in `namespace`.
    pub fn named(&self, name: &str, namespace: &str) -> Option<&ActorTableData> {
        self.names.get(&(namespace.to_string(), name.to_string())).and_then(|id| self.by_id.get(id))
    }

    /// Every actor (of `job` when not empty), oldest first.
    pub fn all(&self, job: &str, alive_only: bool) -> Vec<ActorTableData> {
        let mut v: Vec<ActorTableData> = self
            .by_id
            .values()
            .filter(|a| (job.is_empty() || a.job_id == job) && (!alive_only || a.state != DEAD))
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.start_time_ms, &a.actor_id).cmp(&(b.start_time_ms, &b.actor_id)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(id: u8, name: &str) -> ActorTableData {
        ActorTableData { actor_id: format!("{id:032x}"), name: name.into(), namespace: "ns".into(), job_id: "01000000".into(), ..Default::default() }
    }

    #[test]
    fn names_are_unique_among_live_actors_and_free_again_when_dead() {
        let mut t = Actors::default();
        assert_eq!(t.register(actor(1, "a"), false), Ok(None));
        let err = t.register(actor(2, "a"), false).unwrap_err();
        assert!(err.to_string().contains("The name a (namespace=ns) is already taken"), "{err}");
        let got = t.register(actor(3, "a"), true).expect("get_if_exists").expect("the existing one");
        assert_eq!(got.actor_id, format!("{:032x}", 1));
        assert!(t.get(&format!("{:032x}", 3)).is_none(), "not registered when the existing one is returned");
        assert!(t.kill(&format!("{:032x}", 1), "killed"));
        assert_eq!(t.register(actor(4, "a"), false), Ok(None));
        assert_eq!(t.named("a", "ns").map(|a| a.actor_id.clone()), Some(format!("{:032x}", 4)));
    }

    #[test]
    fn a_dead_actor_stays_dead_and_its_job_takes_only_attached_actors() {
        let mut t = Actors::default();
        t.register(actor(1, ""), false).unwrap();
        let mut d = actor(2, "");
        d.detached = true;
        t.register(d, false).unwrap();
        let alive = ActorTableData { actor_id: format!("{:032x}", 1), state: ALIVE.into(), address: "x:1".into(), ..Default::default() };
        assert_eq!(t.update(&alive), Some((ALIVE.to_string(), false)));
        let mut pending = actor(3, "");
        pending.detached = true;
        t.register(pending, false).unwrap();
        t.update(&ActorTableData { actor_id: format!("{:032x}", 2), state: ALIVE.into(), address: "x:2".into(), ..Default::default() });
        let mut ended = t.job_finished("01000000");
        ended.sort();
        assert_eq!(ended, vec![(format!("{:032x}", 1), "x:1".to_string()), (format!("{:032x}", 3), String::new())]);
        assert_eq!(t.update(&alive), Some((DEAD.to_string(), true)), "no update revives it");
        assert_eq!(t.get(&format!("{:032x}", 2)).map(|a| a.state.as_str()), Some(ALIVE), "a created detached actor lives on");
        assert!(t.get(&format!("{:032x}", 3)).is_some_and(|a| a.death_cause.contains("died before it was created")));
        assert!(t.register(ActorTableData { actor_id: "zz".into(), ..Default::default() }, false).is_err());
    }

    #[test]
    fn a_dead_worker_takes_the_actors_it_owned_and_an_orphaned_detached_one() {
        let mut t = Actors::default();
        let mut owned = actor(1, "");
        owned.owner_worker_id = "w1".into();
        t.register(owned, false).unwrap();
        let mut kept = actor(2, "keeper");
        kept.owner_worker_id = "w1".into();
        kept.detached = true;
        t.register(kept, false).unwrap();
        let alive = ActorTableData { actor_id: format!("{:032x}", 2), state: ALIVE.into(), address: "x:1".into(), worker_id: "w2".into(), ..Default::default() };
        t.update(&alive);
        let none = std::collections::HashSet::new();
        assert_eq!(t.worker_died("w1", &none), vec![format!("{:032x}", 1)], "the detached, alive one outlives its owner");
        assert_eq!(t.get(&format!("{:032x}", 1)).map(|a| a.death_cause.clone()), Some("The actor is dead because its owner has died.".into()));
        assert_eq!(t.worker_died("w2", &none), vec![format!("{:032x}", 2)], "its worker died with nobody to restart it");
        assert!(t.worker_died("w3", &none).is_empty());
    }
}
