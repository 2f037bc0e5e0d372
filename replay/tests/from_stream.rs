//! Rebuilds from the Kinesis log (kinesalite) instead of the store, across a reshard, compared
//! with views built live.

// Unwrapping is how a test says "this must work".
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use commit_log::projection::Projection;
use commit_log::LoggedCommit;
use common::{commits_after, fresh_store, logged_commits, publish, write_history, write_orders};
use event_store::PgEventStore;
use read_models::{ActiveOrdersProjection, SchemaName};
use replay::dynamodb::compare_tables;
use replay::{
    rebuild, rebuild_from_stream, verify, ProgressTable, ReadModel, RebuildOptions, ReplayError,
    StreamSource, StreamStart, Until,
};
use test_support::{aws_test_config, fresh_database, unique_name, TestStream};

/// The store's commits published as the relay publishes them (one record per commit, partition
/// key = aggregate id, in commit order), with shard 0 split in two halfway through, so that
/// some aggregates have their first commits in the parent and the rest in a child. Also
/// returns a moment a quarter of the way through: the time, and the last position published
/// before it.
async fn publish_with_a_reshard(store: &PgEventStore) -> (TestStream, time::OffsetDateTime, i64) {
    let stream = TestStream::create(2).await;
    let ranges = commits_after(store, 0).await;
    let shards = stream
        .client
        .list_shards()
        .stream_name(&stream.name)
        .send()
        .await
        .unwrap();
    let first_shard = shards.shards()[0].shard_id().to_owned();
    let mut quarter = (time::OffsetDateTime::now_utc(), 0);
    for (index, (first, last)) in ranges.iter().enumerate() {
        if index == ranges.len() / 4 {
            // Kinesis timestamps have millisecond precision: keep the moment clear of records.
            tokio::time::sleep(Duration::from_millis(20)).await;
            quarter = (time::OffsetDateTime::now_utc(), first - 1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        publish(store, &stream, *first, *last).await;
        if index == ranges.len() / 2 {
            stream
                .client
                .split_shard()
                .stream_name(&stream.name)
                .shard_to_split(&first_shard)
                .new_starting_hash_key("85070591730234615865843651857942052864")
                .send()
                .await
                .unwrap();
            stream.wait_active().await;
        }
    }
    (stream, quarter.0, quarter.1)
}

struct Setup {
    store: PgEventStore,
    commits: Vec<LoggedCommit>,
    stream: TestStream,
    /// A moment of the publishing, and the last position published before it.
    quarter: (time::OffsetDateTime, i64),
}

async fn setup() -> Setup {
    let store = fresh_store().await;
    write_orders(&store).await;
    write_history(&store).await;
    write_orders(&store).await;
    let commits = logged_commits(&store).await;
    let (stream, at, position) = publish_with_a_reshard(&store).await;
    Setup {
        store,
        commits,
        stream,
        quarter: (at, position),
    }
}

fn source(stream: &TestStream, start: StreamStart) -> StreamSource {
    StreamSource {
        client: stream.client.clone(),
        stream: stream.name.clone(),
        start,
    }
}

/// Builds `model` live from `commits` and again from all of `stream`, checks the two are equal,
/// and returns the projection onto the rebuilt one.
async fn rebuilt_equals_live(
    views: &sqlx::PgPool,
    model: ReadModel,
    commits: &[LoggedCommit],
    stream: &TestStream,
) -> Box<dyn Projection> {
    let live = new_schema("live");
    model.create_schema(views, &live).await.unwrap();
    let projection = model.projection(views.clone(), live.clone());
    for commit in commits {
        projection
            .apply(std::slice::from_ref(commit))
            .await
            .unwrap();
    }
    let rebuilt = new_schema("stream");
    model.create_schema(views, &rebuilt).await.unwrap();
    let from_stream = model.projection(views.clone(), rebuilt.clone());
    let done = rebuild_from_stream(
        &source(stream, StreamStart::TrimHorizon),
        from_stream.as_ref(),
        5,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(done.commits, commits.len() as u64);
    let comparison = verify(views, &live, &rebuilt).await.unwrap();
    assert!(comparison.is_equal(), "{comparison:#?}");
    from_stream
}

fn new_schema(prefix: &str) -> SchemaName {
    SchemaName::parse(&unique_name(prefix).replace('-', "_").to_lowercase()).unwrap()
}

#[tokio::test]
async fn a_rebuild_from_the_stream_across_a_reshard_equals_the_views_built_live() {
    let Setup {
        commits, stream, ..
    } = setup().await;
    let shards = stream
        .client
        .list_shards()
        .stream_name(&stream.name)
        .send()
        .await
        .unwrap();
    assert_eq!(shards.shards().len(), 4, "two shards, one of them split");

    let views = fresh_database().await.pool;
    for model in [ReadModel::History, ReadModel::Analytics] {
        rebuilt_equals_live(&views, model, &commits, &stream).await;
    }

    let client = aws_support::dynamodb(&aws_test_config().await);
    let tables = |prefix: &str| replay::dynamodb::target_tables(&unique_name(prefix)).unwrap();
    let (live, rebuilt) = (tables("live"), tables("stream"));
    for t in [&live, &rebuilt] {
        ActiveOrdersProjection::create_tables(&client, t)
            .await
            .unwrap();
    }
    let projection = ActiveOrdersProjection::new(client.clone(), live.clone());
    for commit in &commits {
        projection
            .apply(std::slice::from_ref(commit))
            .await
            .unwrap();
    }
    rebuild_from_stream(
        &source(&stream, StreamStart::TrimHorizon),
        &ActiveOrdersProjection::new(client.clone(), rebuilt.clone()),
        5,
        |_| {},
    )
    .await
    .unwrap();
    let comparison = compare_tables(&client, &live, &rebuilt).await.unwrap();
    assert!(comparison.is_equal(), "{comparison:#?}");
}

#[tokio::test]
async fn a_rebuild_from_a_point_of_the_stream_continues_an_as_of_view_and_refuses_a_bare_target() {
    let s = setup().await;
    let (moment, position) = s.quarter;
    let views = fresh_database().await.pool;
    let model = ReadModel::History;
    let live = new_schema("live");
    model.create_schema(&views, &live).await.unwrap();
    let projection = model.projection(views.clone(), live.clone());
    for commit in &s.commits {
        projection
            .apply(std::slice::from_ref(commit))
            .await
            .unwrap();
    }
    // The view as of the moment, from the store; then the stream from that moment on.
    let continued = new_schema("continued");
    model.create_schema(&views, &continued).await.unwrap();
    let progress = ProgressTable::new(views.clone(), continued.clone());
    progress.create().await.unwrap();
    let target = model.projection(views.clone(), continued.clone());
    let options = RebuildOptions {
        until: Some(Until::Position(position)),
        batch_commits: 10,
    };
    rebuild(&s.store, target.as_ref(), &progress, &options, |_| {})
        .await
        .unwrap();
    let from_moment = source(&s.stream, StreamStart::At(moment));
    let done = rebuild_from_stream(&from_moment, target.as_ref(), 5, |_| {})
        .await
        .unwrap();
    assert!(
        done.commits > 0 && done.commits < s.commits.len() as u64,
        "{done:?}"
    );
    let comparison = verify(&views, &live, &continued).await.unwrap();
    assert!(comparison.is_equal(), "{comparison:#?}");

    // Onto an empty target, aggregates that began before the moment start with a gap.
    let bare = new_schema("bare");
    model.create_schema(&views, &bare).await.unwrap();
    let refused = rebuild_from_stream(
        &from_moment,
        model.projection(views.clone(), bare).as_ref(),
        5,
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("gap"), "{refused}");
}

#[tokio::test]
async fn a_rebuild_from_after_the_last_record_reads_nothing_and_ends() {
    // Tried: a start later than every record of every shard, the tip of the log (kinesalite
    // used to leave GetShardIterator AT_TIMESTAMP unanswered for a shard with no record after
    // the moment, and the rebuild waited out the SDK's timeout and failed).
    let s = setup().await;
    // kinesalite dates a split's child shards a second ahead and stamps their records no
    // earlier than that: wait it out so that the moment is after every record.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after_everything = time::OffsetDateTime::now_utc();
    let views = fresh_database().await.pool;
    let schema = new_schema("tip");
    ReadModel::History
        .create_schema(&views, &schema)
        .await
        .unwrap();
    let projection = ReadModel::History.projection(views.clone(), schema.clone());
    let rebuilt = tokio::time::timeout(
        Duration::from_secs(20),
        rebuild_from_stream(
            &source(&s.stream, StreamStart::At(after_everything)),
            projection.as_ref(),
            5,
            |_| {},
        ),
    )
    .await
    .expect("a start at the tip answers at once");
    assert_eq!(rebuilt.unwrap().commits, 0);
}

#[tokio::test]
async fn a_start_outside_the_retention_or_in_the_future_is_refused() {
    let s = setup().await;
    let views = fresh_database().await.pool;
    let schema = new_schema("stream");
    ReadModel::History
        .create_schema(&views, &schema)
        .await
        .unwrap();
    let projection = ReadModel::History.projection(views.clone(), schema.clone());
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    let refused = rebuild_from_stream(
        &source(&s.stream, StreamStart::At(long_ago)),
        projection.as_ref(),
        5,
        |_| {},
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(ReplayError::OutsideRetention { hours: 24, .. })
        ),
        "{refused:?}"
    );
    let tomorrow = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let refused = rebuild_from_stream(
        &source(&s.stream, StreamStart::At(tomorrow)),
        projection.as_ref(),
        5,
        |_| {},
    )
    .await;
    assert!(
        matches!(refused, Err(ReplayError::FutureStart(_))),
        "{refused:?}"
    );
}

/// The store's commits packed several per record, as a relay that packs writes them to a
/// one-shard stream (so any commits may share a record), with one plain single-commit record
/// among them (a relay before containers).
async fn publish_packed(store: &PgEventStore, per_record: usize) -> TestStream {
    let stream = TestStream::create(1).await;
    let ranges = commits_after(store, 0).await;
    let (plain, packed) = ranges.split_first().unwrap();
    publish(store, &stream, plain.0, plain.1).await;
    for chunk in packed.chunks(per_record) {
        let mut container = commit_log::Container::new();
        let mut partition_key = None;
        for (first, last) in chunk {
            let events: Vec<_> =
                futures::TryStreamExt::try_collect(store.read_range(first - 1, *last))
                    .await
                    .unwrap();
            partition_key.get_or_insert_with(|| events[0].aggregate_id.clone());
            container.push(commit_log::encode(&events).unwrap());
        }
        stream
            .client
            .put_record()
            .stream_name(&stream.name)
            .partition_key(partition_key.unwrap())
            .data(aws_sdk_kinesis::primitives::Blob::new(
                container.into_record(),
            ))
            .send()
            .await
            .unwrap();
    }
    stream
}

#[tokio::test]
async fn a_rebuild_from_a_stream_of_packed_records_equals_the_view_built_live_and_stops_at_an_unknown_container(
) {
    let Setup { store, commits, .. } = setup().await;
    let stream = publish_packed(&store, 7).await;
    let views = fresh_database().await.pool;
    let from_stream = rebuilt_equals_live(&views, ReadModel::History, &commits, &stream).await;

    // A container of a version this build does not read stops the rebuild with its shard.
    let mut newer = commit_log::Container::new();
    newer.push(b"first".to_vec());
    newer.push(b"second".to_vec());
    let mut record = newer.into_record();
    record[3] = commit_log::container::CONTAINER_VERSION + 1;
    stream
        .client
        .put_record()
        .stream_name(&stream.name)
        .partition_key("newer")
        .data(aws_sdk_kinesis::primitives::Blob::new(record))
        .send()
        .await
        .unwrap();
    let stopped = rebuild_from_stream(
        &source(&stream, StreamStart::TrimHorizon),
        from_stream.as_ref(),
        5,
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&stopped, ReplayError::MalformedRecord { reason, .. } if reason.contains("container version")),
        "{stopped}"
    );
}
