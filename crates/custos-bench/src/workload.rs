//! The deterministic workload of BENCHMARKS.md: one tenant, three instances, twenty entities,
//! 10,000 users and 10,000,000 record ids, both with Zipf-distributed activity, and the event
//! mix (60 % RetrieveMultiple, 20 % Retrieve, 10 % Update, 5 % Create, 2 % Delete, 2 %
//! ExportToExcel, 1 % admin and sign-in).

use custos_audit::{AuditEvent, Change, EntityCategory, Operation, Origin, ResultStatus, UserType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use uuid::Uuid;

pub(crate) const USERS: u64 = 10_000;
pub(crate) const RECORDS: u64 = 10_000_000;
pub(crate) const DAY_US: i64 = 86_400 * 1_000_000;

const ENTITIES: [(&str, EntityCategory); 20] = [
    ("account", EntityCategory::OutOfBox),
    ("contact", EntityCategory::OutOfBox),
    ("lead", EntityCategory::OutOfBox),
    ("opportunity", EntityCategory::OutOfBox),
    ("incident", EntityCategory::OutOfBox),
    ("task", EntityCategory::OutOfBox),
    ("email", EntityCategory::OutOfBox),
    ("appointment", EntityCategory::OutOfBox),
    ("quote", EntityCategory::OutOfBox),
    ("invoice", EntityCategory::OutOfBox),
    ("new_project", EntityCategory::Custom),
    ("new_timesheet", EntityCategory::Custom),
    ("new_asset", EntityCategory::Custom),
    ("new_contract", EntityCategory::Custom),
    ("new_visit", EntityCategory::Custom),
    ("new_survey", EntityCategory::Custom),
    ("systemuser", EntityCategory::Admin),
    ("team", EntityCategory::Admin),
    ("role", EntityCategory::Admin),
    ("organization", EntityCategory::Admin),
];
const AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/128.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15",
    "Microsoft.PowerPlatform.Dataverse.Client/1.1.32",
    "python-requests/2.32.3",
];

/// Spreads a number into a GUID-like id, so record ids look random but are reproducible.
pub(crate) fn record_guid(index: u64) -> Uuid {
    let mix = |mut x: u64| {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    };
    let high = mix(index);
    let low = mix(index ^ 0xdead_beef);
    uuid::Builder::from_random_bytes(((u128::from(high) << 64) | u128::from(low)).to_le_bytes())
        .into_uuid()
}

pub(crate) fn user_upn(user: u64) -> String {
    format!("user{user}@bench.example")
}

/// One producer's stream of events.
pub(crate) struct Workload {
    rng: StdRng,
    users: Zipf<f64>,
    records: Zipf<f64>,
    tenant: Uuid,
    /// Time of the first event and the step between events, microseconds.
    start_us: i64,
    step_us: i64,
    produced: i64,
}

impl Workload {
    /// The stream of producer `producer`; times run from `start_us` in steps of `step_us`.
    pub(crate) fn new(seed: u64, producer: u64, start_us: i64, step_us: i64) -> Workload {
        Workload {
            rng: StdRng::seed_from_u64(seed ^ producer.wrapping_mul(0x1000_0000_01b3)),
            users: Zipf::new(USERS as f64, 1.0).expect("valid Zipf parameters"),
            records: Zipf::new(RECORDS as f64, 1.0).expect("valid Zipf parameters"),
            tenant: Uuid::from_u128(0x0c57_0500_0000_4000_8000_0000_0000_0001),
            start_us,
            step_us,
            produced: 0,
        }
    }

    /// A record id drawn from the Zipf distribution of accesses.
    pub(crate) fn record(&mut self) -> Uuid {
        record_guid(self.records.sample(&mut self.rng) as u64)
    }

    /// A user drawn from the Zipf distribution of activity.
    pub(crate) fn user(&mut self) -> u64 {
        self.users.sample(&mut self.rng) as u64
    }

    pub(crate) fn next_event(&mut self) -> AuditEvent {
        let user = self.user();
        let roll: f64 = self.rng.random();
        let (operation, n_ids) = if roll < 0.60 {
            let page: f64 = self.rng.random();
            (
                Operation::RetrieveMultiple,
                if page < 0.89 {
                    50
                } else if page < 0.99 {
                    250
                } else {
                    5000
                },
            )
        } else if roll < 0.80 {
            (Operation::Retrieve, 1)
        } else if roll < 0.90 {
            (Operation::Update, 1)
        } else if roll < 0.95 {
            (Operation::Create, 1)
        } else if roll < 0.97 {
            (Operation::Delete, 1)
        } else if roll < 0.99 {
            (Operation::ExportToExcel, 1000)
        } else if roll < 0.995 {
            (Operation::SignIn, 0)
        } else {
            (Operation::UpdateAuditSettings, 0)
        };
        let (entity, category) = if n_ids == 0 {
            ("organization", EntityCategory::Admin)
        } else {
            ENTITIES[self.rng.random_range(0..ENTITIES.len())]
        };
        let record_ids: Vec<Uuid> = (0..n_ids).map(|_| self.record()).collect();
        let changes = match operation {
            Operation::Update => (0..5)
                .map(|i| Change {
                    attribute: format!("field{i}"),
                    old: Some(format!("\"old value {}\"", self.rng.random::<u16>())),
                    new: Some(format!("\"new value {}\"", self.rng.random::<u16>())),
                })
                .collect(),
            _ => Vec::new(),
        };
        let instance = ["main", "sales", "service"][(user % 3) as usize];
        let time_us = self.start_us + self.produced * self.step_us;
        self.produced += 1;
        AuditEvent {
            id: Uuid::now_v7(),
            creation_time_us: time_us,
            tenant_id: self.tenant,
            instance: instance.into(),
            instance_url: format!("https://bench.example/{instance}"),
            workload: "Custos".into(),
            record_type: operation.record_type().as_str().into(),
            operation: operation.as_str().into(),
            category: operation.category(category).as_str().into(),
            user_id: Uuid::from_u128(u128::from(user)).to_string(),
            user_upn: user_upn(user),
            user_type: if user < 10 {
                UserType::Admin
            } else {
                UserType::Regular
            },
            caller_id: String::new(),
            client_ip: format!("10.{}.{}.{}", user % 200, (user / 200) % 250, user % 7),
            user_agent: AGENTS[(user % 4) as usize].into(),
            origin: if user.is_multiple_of(3) {
                Origin::WebUI
            } else {
                Origin::Api
            },
            correlation_id: Uuid::from_u128(self.rng.random()).to_string(),
            session_id: Uuid::from_u128(u128::from(user) << 64).to_string(),
            client_request_id: String::new(),
            result_status: if self.rng.random::<f64>() < 0.01 {
                ResultStatus::Denied
            } else {
                ResultStatus::Succeeded
            },
            error_code: String::new(),
            entity_name: entity.into(),
            entity_category: category,
            record_ids,
            query: if n_ids > 1 {
                format!("{entity}s?$filter=statecode eq 0&$top={n_ids}")
            } else {
                String::new()
            },
            result_count: n_ids,
            changes,
            details: String::new(),
        }
    }
}
