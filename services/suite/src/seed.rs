//! `retail-suite seed`: a realistic demo dataset, loaded through the public APIs with
//! a progress bar.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use retail_proto::identity::identity_service_client::IdentityServiceClient;
use retail_proto::identity::{self as ipb};
use retail_proto::membership::membership_service_client::MembershipServiceClient;
use retail_proto::membership::{self as pb};
use tonic::transport::Channel;

#[derive(Debug, Clone, clap::Args)]
pub struct SeedArgs {
    /// Members to register.
    #[arg(long, default_value_t = 100_000)]
    pub members: u64,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub identity: String,
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    pub membership: String,
    /// Directory holding `admin-password` (as `retail-suite up` created it).
    #[arg(long, default_value = "data")]
    pub data_dir: std::path::PathBuf,
}

const REGIONS: &[&str] = &["DE-BE", "DE-HH", "DE-BY", "FR-IDF", "NL-NH", "AT-9", "CH-ZH"];
const INTERESTS: &[&str] = &[
    "outdoor/hiking",
    "outdoor/running",
    "fashion/shoes",
    "home/kitchen",
    "kids",
];

/// A member's phone number in the seed's reserved range, unique per index.
pub fn seed_phone(run: u32, i: u64) -> String {
    format!("+4917{run:03}{i:07}")
}

/// Logs in as the admin and returns a bearer header value.
pub async fn admin_bearer(identity: Channel, password: &str) -> anyhow::Result<String> {
    let tokens = IdentityServiceClient::new(identity)
        .login(ipb::LoginRequest {
            username: "admin".into(),
            password: password.into(),
        })
        .await
        .context("admin login failed")?
        .into_inner()
        .tokens
        .context("login returned no token")?;
    Ok(format!("Bearer {}", tokens.access_token))
}

/// Registers `count` members; returns the run number of their phones
/// ([`seed_phone`]) and their resource names.
pub async fn register_members(
    membership: Channel,
    bearer: &str,
    count: u64,
    concurrency: usize,
) -> anyhow::Result<(u32, Vec<String>)> {
    let run: u32 = rand::rng().random_range(0..1000);
    let bar = ProgressBar::new(count);
    bar.set_style(
        ProgressStyle::with_template("seeding members [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let next = Arc::new(AtomicU64::new(0));
    let header: tonic::metadata::MetadataValue<_> = bearer.parse()?;
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (next, bar, header) = (next.clone(), bar.clone(), header.clone());
            let mut client = MembershipServiceClient::new(membership.clone());
            tokio::spawn(async move {
                let mut names = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<_, anyhow::Error>(names);
                    }
                    let mut request = tonic::Request::new(pb::RegisterMemberRequest {
                        member: Some(pb::Member {
                            display_name: format!("Member {i}"),
                            region: REGIONS[i as usize % REGIONS.len()].into(),
                            identifiers: vec![
                                pb::Identifier {
                                    kind: pb::IdentifierKind::Phone as i32,
                                    value: seed_phone(run, i),
                                    channel: String::new(),
                                },
                                pb::Identifier {
                                    kind: pb::IdentifierKind::Email as i32,
                                    value: format!("member{run}.{i}@example.com"),
                                    channel: String::new(),
                                },
                            ],
                            tags: vec![pb::Tag {
                                path: format!("interest/{}", INTERESTS[i as usize % INTERESTS.len()]),
                                source: "seed".into(),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }),
                        request_id: format!("seed-{run}-{i}"),
                    });
                    request.metadata_mut().insert("authorization", header.clone());
                    let member = client.register_member(request).await.context("register failed")?;
                    names.push(member.into_inner().name);
                    bar.inc(1);
                }
            })
        })
        .collect();
    let mut names = Vec::with_capacity(count as usize);
    for w in workers {
        names.extend(w.await.context("a seeding worker panicked")??);
    }
    bar.finish_and_clear();
    Ok((run, names))
}

pub async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let password = std::fs::read_to_string(args.data_dir.join("admin-password"))
        .with_context(|| format!("failed to read {}/admin-password", args.data_dir.display()))?;
    let identity = Channel::from_shared(args.identity.clone())?.connect().await?;
    let membership = Channel::from_shared(args.membership.clone())?.connect().await?;
    let bearer = admin_bearer(identity, password.trim()).await?;
    let started = Instant::now();
    let (_, names) = register_members(membership, &bearer, args.members, args.concurrency).await?;
    println!(
        "seeded {} members in {:.1} s",
        names.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
