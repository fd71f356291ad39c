//! Deterministic fake people, companies and teams for the listable vendors.
//!
//! The same `(seed, users, groups)` always gives the same world, so tests and benchmarks can
//! assert exact contents. Timestamps are derived from the index, never from the wall clock.

use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::SeedSpec;

const FIRST: &[&str] = &[
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "Edsger",
    "Radia",
    "Tim",
    "Hedy",
    "Donald",
    "Katherine",
    "John",
    "Sophie",
    "Guido",
    "Annie",
    "Niklaus",
    "Shafi",
    "Leslie",
    "Jean",
    "Bjarne",
    "Mary",
    "Yukihiro",
    "Carol",
    "Rasmus",
    "Adele",
    "Brian",
    "Lynn",
    "James",
    "Evelyn",
    "Ward",
    "Joan",
    "Larry",
    "Ida",
    "Whitfield",
    "Elena",
    "Chen",
    "Amara",
    "Mateo",
    "Priya",
    "Kofi",
    "Ingrid",
    "Tomás",
    "Aiko",
    "Omar",
    "Zoë",
    "Søren",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Berners-Lee",
    "Lamarr",
    "Knuth",
    "Johnson",
    "McCarthy",
    "Wilson",
    "van Rossum",
    "Easley",
    "Wirth",
    "Goldwasser",
    "Lamport",
    "Sammet",
    "Stroustrup",
    "Keller",
    "Matsumoto",
    "Shaw",
    "Lerdorf",
    "Goldberg",
    "Kernighan",
    "Conway",
    "Gosling",
    "Boyd",
    "Cunningham",
    "Clarke",
    "Page",
    "Rhodes",
    "Diffie",
    "Petrova",
    "Wei",
    "Okafor",
    "García",
    "Raman",
    "Mensah",
    "Larsen",
    "O'Brien",
    "Tanaka",
    "Haddad",
    "Müller",
    "Kierkegaard",
];
const COMPANIES: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Wonka",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Aperture",
    "Vandelay",
    "Pied Piper",
    "Monsters",
    "Gringotts",
    "Oceanic",
    "Dunder Mifflin",
    "Prestige",
    "Massive Dynamic",
];
const SUFFIXES: &[&str] = &["Corp", "Inc", "Labs", "Ltd", "GmbH", "Systems"];
const TEAMS: &[&str] = &[
    "Engineering",
    "Sales",
    "Support",
    "Marketing",
    "Finance",
    "People",
    "Design",
    "Product",
    "Legal",
    "Operations",
    "Security",
    "Data",
];
const PLANS: &[&str] = &["free", "starter", "pro", "enterprise"];
const ROLES: &[&str] = &["admin", "member", "viewer", "owner", "billing"];
const LOCALES: &[&str] = &[
    "en-US", "en-GB", "de-DE", "fr-FR", "ja-JP", "pt-BR", "es-ES",
];
const INDUSTRIES: &[&str] = &[
    "software",
    "retail",
    "finance",
    "health",
    "education",
    "media",
];

/// One generated person, shared by every listable vendor.
#[derive(Clone, Debug)]
pub(crate) struct Person {
    pub idx: usize,
    pub first: String,
    pub last: String,
    pub email: String,
    pub plan: &'static str,
    pub role: &'static str,
    pub locale: &'static str,
    pub seats: u32,
    pub signed_up_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// Deactivated in SCIM, INACTIVE nowhere else.
    pub active: bool,
    /// A Guru light user (READ_ONLY/FREE): never in a Guru group.
    pub light: bool,
    /// Invited to Guru but not yet accepted.
    pub pending: bool,
}

impl Person {
    pub fn userflow_id(&self) -> String {
        format!("user_{:05}", self.idx + 1)
    }
    pub fn external_id(&self) -> String {
        format!("hr-{:05}", self.idx + 1)
    }
    pub fn name(&self) -> String {
        format!("{} {}", self.first, self.last)
    }
}

/// A company: a Userflow group.
#[derive(Clone, Debug)]
pub(crate) struct Company {
    pub idx: usize,
    pub name: String,
    pub plan: &'static str,
    pub industry: &'static str,
    pub employees: u32,
    pub created_at: DateTime<Utc>,
}

impl Company {
    pub fn userflow_id(&self) -> String {
        format!("group_{:03}", self.idx + 1)
    }
}

/// A team: a Guru group and a SCIM group.
#[derive(Clone, Debug)]
pub(crate) struct Team {
    pub idx: usize,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl Team {
    pub fn external_id(&self) -> String {
        format!("team-{:03}", self.idx + 1)
    }
}

/// Everything seeded for one `SeedSpec`.
#[derive(Clone, Debug)]
pub(crate) struct World {
    pub spec: SeedSpec,
    pub people: Vec<Person>,
    pub companies: Vec<Company>,
    pub teams: Vec<Team>,
    /// (person, company): every person is in one company, some in two.
    pub company_members: Vec<(usize, usize)>,
    /// (person, team): light users are in none.
    pub team_members: Vec<(usize, usize)>,
}

/// 2023-01-01T00:00:00Z: the seeded data's epoch.
fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2023, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// A deterministic RNG for one purpose (`salt`) of one seed.
pub(crate) fn rng(seed: u64, salt: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// A random UUID v4 string from `rng`.
pub(crate) fn uuid(rng: &mut StdRng) -> String {
    let v: u128 = rng.random();
    let v = (v & !(0xF << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl World {
    pub fn generate(spec: SeedSpec) -> World {
        let mut r = rng(spec.seed, 1);
        let start = epoch();
        let people: Vec<Person> = (0..spec.users)
            .map(|idx| Person::draw(&mut r, start, idx))
            .collect();
        let companies: Vec<Company> = (0..spec.groups)
            .map(|idx| Company::draw(&mut r, start, idx))
            .collect();
        let teams: Vec<Team> = (0..spec.groups).map(|idx| Team::new(start, idx)).collect();
        let mut company_members = Vec::new();
        let mut team_members = Vec::new();
        if spec.groups > 0 {
            for p in &people {
                pick_groups(&mut r, spec.groups, 0.2, p.idx, &mut company_members);
                if !p.light {
                    pick_groups(&mut r, spec.groups, 0.3, p.idx, &mut team_members);
                }
            }
        }
        World {
            spec,
            people,
            companies,
            teams,
            company_members,
            team_members,
        }
    }
}

/// Puts person `idx` in one of `groups` groups, and with probability `p_second` in a second,
/// different one.
fn pick_groups(
    r: &mut StdRng,
    groups: usize,
    p_second: f64,
    idx: usize,
    out: &mut Vec<(usize, usize)>,
) {
    let first = r.random_range(0..groups);
    out.push((idx, first));
    if groups > 1 && r.random_bool(p_second) {
        out.push((idx, (first + 1 + r.random_range(0..groups - 1)) % groups));
    }
}

impl Person {
    /// Person `idx`, created 37 minutes after the one before.
    fn draw(r: &mut StdRng, start: DateTime<Utc>, idx: usize) -> Person {
        let first = FIRST.choose(r).copied().unwrap_or("Ada");
        let last = LAST.choose(r).copied().unwrap_or("Lovelace");
        let local: String = format!("{}.{}", first, last)
            .to_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
            .collect();
        let created_at = start + ChronoDuration::minutes(idx as i64 * 37);
        Person {
            idx,
            first: first.to_owned(),
            last: last.to_owned(),
            email: format!("{local}.{}@example.com", idx + 1),
            plan: PLANS.choose(r).copied().unwrap_or("free"),
            role: ROLES.choose(r).copied().unwrap_or("member"),
            locale: LOCALES.choose(r).copied().unwrap_or("en-US"),
            seats: r.random_range(1..=250),
            signed_up_at: created_at - ChronoDuration::days(r.random_range(0..400)),
            created_at,
            active: !r.random_bool(0.08),
            light: r.random_bool(0.1),
            pending: r.random_bool(0.05),
        }
    }
}

impl Company {
    /// Company `idx`: names cycle through base names and suffixes, then get a round number.
    fn draw(r: &mut StdRng, start: DateTime<Utc>, idx: usize) -> Company {
        let base = COMPANIES[idx % COMPANIES.len()];
        let suffix = SUFFIXES[(idx / COMPANIES.len()) % SUFFIXES.len()];
        let round = idx / (COMPANIES.len() * SUFFIXES.len());
        let name = if round == 0 {
            format!("{base} {suffix}")
        } else {
            format!("{base} {suffix} {}", round + 1)
        };
        Company {
            idx,
            name,
            plan: PLANS.choose(r).copied().unwrap_or("pro"),
            industry: INDUSTRIES.choose(r).copied().unwrap_or("software"),
            employees: r.random_range(5..=5000),
            created_at: start - ChronoDuration::days(30) + ChronoDuration::hours(idx as i64),
        }
    }
}

impl Team {
    /// Team `idx`: names cycle through the base names, then get a round number.
    fn new(start: DateTime<Utc>, idx: usize) -> Team {
        let base = TEAMS[idx % TEAMS.len()];
        let round = idx / TEAMS.len();
        Team {
            idx,
            name: if round == 0 {
                base.to_owned()
            } else {
                format!("{base} {}", round + 1)
            },
            created_at: start - ChronoDuration::days(60) + ChronoDuration::hours(idx as i64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_world_and_unique_emails() {
        let spec = SeedSpec {
            seed: 7,
            users: 500,
            groups: 30,
        };
        let a = World::generate(spec);
        let b = World::generate(spec);
        assert_eq!(
            a.people.iter().map(|p| &p.email).collect::<Vec<_>>(),
            b.people.iter().map(|p| &p.email).collect::<Vec<_>>()
        );
        let mut emails: Vec<_> = a.people.iter().map(|p| p.email.clone()).collect();
        emails.sort();
        emails.dedup();
        assert_eq!(emails.len(), 500);
        let mut names: Vec<_> = a.companies.iter().map(|c| c.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 30);
        assert!(a.team_members.iter().all(|(p, _)| !a.people[*p].light));
    }

    #[test]
    fn uuid_is_v4_shaped() {
        let u = uuid(&mut rng(1, 2));
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
