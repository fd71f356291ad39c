//! The shared state behind every handler: one store per vendor, faults, the request log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use serde_json::Value;

use super::faults::Faults;
use super::log::RequestLog;
use super::seed::World;
use super::{SeedSpec, Settings, Vendor, appcues, guru, scim, userflow, userguiding, userpilot};

#[derive(Debug)]
pub(crate) struct Shared {
    pub settings: Settings,
    pub seed: Mutex<SeedSpec>,
    pub userguiding: Mutex<userguiding::Store>,
    pub userflow: Mutex<userflow::Store>,
    pub userpilot: Mutex<userpilot::Store>,
    pub appcues: Mutex<appcues::Store>,
    pub guru: Mutex<guru::Store>,
    pub guru_scim: Mutex<scim::Store>,
    pub scim: Mutex<scim::Store>,
    pub faults: Faults,
    /// "Delete these users once page N of a listing is served" (tests of paging under churn).
    pub deletes: Mutex<Vec<DeleteAfter>>,
    pub log: RequestLog,
    /// Bumped by reset and reseed: background jobs of an older generation stop.
    pub generation: AtomicU64,
    pub shutting_down: AtomicBool,
}

impl Shared {
    pub fn new(settings: Settings) -> Arc<Shared> {
        let world = World::generate(settings.seed);
        let s = settings.seed.seed;
        Arc::new(Shared {
            seed: Mutex::new(settings.seed),
            userguiding: Mutex::new(userguiding::Store::default()),
            userflow: Mutex::new(userflow::Store::seeded(&world)),
            userpilot: Mutex::new(userpilot::Store::new(s)),
            appcues: Mutex::new(appcues::Store::new(s)),
            guru: Mutex::new(guru::Store::seeded(&world)),
            guru_scim: Mutex::new(scim::Store::seeded(&world, 3)),
            scim: Mutex::new(scim::Store::seeded(&world, 4)),
            faults: Faults::new(settings.faults.clone(), s),
            deletes: Mutex::new(Vec::new()),
            log: RequestLog::new(settings.log_capacity),
            generation: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            settings,
        })
    }

    /// Counts a served listing page (a 200 to a GET of `path`) and runs the deletes due after it.
    pub fn page_served(&self, vendor: Vendor, path: &str) {
        let due: Vec<Vec<String>> = {
            let mut hooks = self.deletes.lock();
            let mut due = Vec::new();
            hooks.retain_mut(|h| {
                if h.vendor != vendor || h.path != path {
                    return true;
                }
                h.served += 1;
                if h.served >= h.after_pages {
                    due.push(std::mem::take(&mut h.ids));
                    false
                } else {
                    true
                }
            });
            due
        };
        for ids in due {
            for id in ids {
                self.delete_user(vendor, &id);
            }
        }
    }

    /// Removes one user the way the vendor's own delete does; false when absent.
    pub fn delete_user(&self, vendor: Vendor, id: &str) -> bool {
        match vendor {
            Vendor::Scim | Vendor::GuruScim => self.scim_store(vendor).lock().remove_user(id),
            Vendor::Userflow => self.userflow.lock().remove_user(id),
            Vendor::Guru => self.guru.lock().remove_member(id),
            _ => false,
        }
    }

    pub fn scim_store(&self, v: Vendor) -> &Mutex<scim::Store> {
        if v == Vendor::GuruScim {
            &self.guru_scim
        } else {
            &self.scim
        }
    }

    pub fn dump(&self, v: Vendor) -> Value {
        match v {
            Vendor::UserGuiding => self.userguiding.lock().dump(),
            Vendor::Userflow => self.userflow.lock().dump(),
            Vendor::Userpilot => self.userpilot.lock().dump(),
            Vendor::Appcues => self.appcues.lock().dump(),
            Vendor::Guru => self.guru.lock().dump(),
            Vendor::GuruScim => self.guru_scim.lock().dump(&self.settings, ""),
            Vendor::Scim => self.scim.lock().dump(&self.settings, ""),
        }
    }

    /// The number of users `v` holds and the users named in `ids` (`null` when absent), as
    /// `{"count": n, "users": {id: user}}`; Userflow, Appcues and Userpilot answer without building the
    /// whole dump (a benchmark checks a million users this way).
    pub fn users_summary(&self, v: Vendor, ids: &[String]) -> Value {
        match v {
            Vendor::Userpilot => self.userpilot.lock().users_summary(ids),
            Vendor::Appcues => self.appcues.lock().users_summary(ids),
            Vendor::Userflow => self.userflow.lock().users_summary(ids),
            _ => {
                let dump = self.dump(v);
                let list = ["users", "Users", "members"]
                    .iter()
                    .find_map(|k| dump[*k].as_array().cloned())
                    .unwrap_or_default();
                let key_of = |u: &Value| {
                    ["id", "user_id", "userId", "externalId"]
                        .iter()
                        .find_map(|k| u[*k].as_str().map(str::to_owned))
                        .or_else(|| u["user"]["email"].as_str().map(str::to_owned))
                };
                let picked: serde_json::Map<String, Value> = ids
                    .iter()
                    .map(|id| {
                        let u = list
                            .iter()
                            .find(|u| key_of(u).as_deref() == Some(id.as_str()))
                            .cloned()
                            .unwrap_or(Value::Null);
                        (id.clone(), u)
                    })
                    .collect();
                serde_json::json!({"count": list.len(), "users": picked})
            }
        }
    }

    /// Replaces every store with `spec`'s world; write-only vendors become empty.
    pub fn reseed(&self, spec: SeedSpec) {
        let world = World::generate(spec);
        self.generation.fetch_add(1, Ordering::SeqCst);
        *self.seed.lock() = spec;
        *self.userguiding.lock() = userguiding::Store::default();
        *self.userflow.lock() = userflow::Store::seeded(&world);
        *self.userpilot.lock() = userpilot::Store::new(spec.seed);
        *self.appcues.lock() = appcues::Store::new(spec.seed);
        *self.guru.lock() = guru::Store::seeded(&world);
        *self.guru_scim.lock() = scim::Store::seeded(&world, 3);
        *self.scim.lock() = scim::Store::seeded(&world, 4);
    }

    /// The start state: initial seed, no jobs, empty log, initial faults.
    pub fn reset(&self) {
        self.reseed(self.settings.seed);
        self.deletes.lock().clear();
        self.log.clear();
        self.faults
            .replace(self.settings.faults.clone(), self.settings.seed.seed);
    }

    pub fn expire_guru_tokens(&self) {
        self.guru.lock().expire_tokens();
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }
}

/// Users to delete once `after_pages` pages of a listing (`GET path`, answered 200) are served.
#[derive(Debug, Clone)]
pub(crate) struct DeleteAfter {
    pub vendor: Vendor,
    pub path: String,
    pub after_pages: u32,
    pub served: u32,
    pub ids: Vec<String>,
}
