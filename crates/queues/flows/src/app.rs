//! The `flows run` process: the log consumers (saga, notifications) on the projector runtime,
//! the queue consumers (payments, intake), the dead-letter depth gauge and the admin endpoint.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use commit_log::projection::Projection;
use commit_log::Vocabulary;
use futures::future::join_all;
use kinesis_consumer::{ParkedStore, RedriveOutcome, RuntimeError, Worker};
use secrecy::SecretString;
use service_kit::admin::{self, HealthCheck};
use service_kit::error_chain;
use service_kit::grpc_tls::{self, GrpcTlsError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::command_client::CommandClient;
use crate::intake::IntakeHandler;
use crate::notifications::{Notifications, NOTIFICATIONS_NAME};
use crate::payments::processor::PaymentProcessor;
use crate::payments::{PaymentGateway, PaymentQueue, SandboxGateway};
use crate::purchase_orders::{PurchaseOrders, PURCHASE_ORDERS_NAME};
use crate::queue::{ConsumerConfig, MessageHandler, QueueConsumer};
use crate::saga::{OrderSaga, SAGA_NAME};
use crate::settings::{Settings, SettingsError, INTAKE, NOTIFICATIONS, PAYMENTS, PURCHASE_ORDERS};
use crate::sqs::SqsQueue;

/// How often the dead-letter queues' depths are read.
const DEPTH_INTERVAL: Duration = Duration::from_secs(30);

/// Why the process could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad or missing settings.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The runtime's tables could not be read or written.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A consumer group this build does not have.
    #[error(
        "unknown consumer group {0:?} (the flows have: order_saga, notifications, purchase_orders)"
    )]
    UnknownGroup(String),
    /// The command API's URL or its TLS files are not usable.
    #[error(transparent)]
    Endpoint(#[from] GrpcTlsError),
    /// The admin listener could not be bound.
    #[error(transparent)]
    Bind(#[from] admin::BindError),
    /// The admin endpoint failed.
    #[error("admin endpoint failed: {0}")]
    Admin(#[source] std::io::Error),
}

/// The consumer groups on the log (each its own leases, checkpoints and parked commits).
pub const LOG_GROUPS: [&str; 3] = [SAGA_NAME, NOTIFICATIONS_NAME, PURCHASE_ORDERS_NAME];

/// The command API's clients, one per flow, all calling with the flows' service token (its
/// subject scopes the idempotency keys and shows in the API's logs).
pub struct CommandClients {
    channel: Channel,
    service_token: SecretString,
    attempts: u32,
    call_timeout: Duration,
}

impl CommandClients {
    /// Clients of `command_api.url` (over TLS when it is `https://`), calling with
    /// `auth.service_token`; the channel connects on
    /// first use.
    pub fn new(settings: &Settings) -> Result<Self, AppError> {
        let command_api = &settings.command_api;
        let channel = grpc_tls::client_endpoint("command_api", &command_api.url, &command_api.tls)?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(Self {
            channel,
            service_token: settings.service_token()?,
            attempts: settings.command_api.attempts,
            call_timeout: Duration::from_millis(settings.command_api.call_timeout_ms),
        })
    }

    /// A client of its own for one flow.
    pub fn client(&self) -> Arc<CommandClient> {
        Arc::new(
            CommandClient::new(self.channel.clone(), &self.service_token, self.attempts)
                .with_call_timeout(self.call_timeout),
        )
    }
}

/// Builds the log consumer groups `groups` names (`order_saga`, `notifications`,
/// `purchase_orders`), for the
/// worker or for a redrive.
pub fn log_consumers(
    settings: &Settings,
    sqs: &aws_sdk_sqs::Client,
    clients: &CommandClients,
    groups: &[&str],
) -> Result<Vec<Arc<dyn Projection>>, AppError> {
    let mut projections: Vec<Arc<dyn Projection>> = Vec::new();
    for group in groups {
        match *group {
            SAGA_NAME => {
                let payments = settings.queue(PAYMENTS)?;
                projections.push(Arc::new(OrderSaga::new(
                    clients.client(),
                    Arc::new(PaymentQueue::new(sqs.clone(), payments.queue_url)),
                )));
            }
            NOTIFICATIONS_NAME => {
                let notifications = settings.queue(NOTIFICATIONS)?;
                projections.push(Arc::new(Notifications::new(
                    clients.client(),
                    sqs.clone(),
                    notifications.queue_url,
                )));
            }
            PURCHASE_ORDERS_NAME => {
                let purchase_orders = settings.queue(PURCHASE_ORDERS)?;
                projections.push(Arc::new(PurchaseOrders::new(
                    sqs.clone(),
                    purchase_orders.queue_url,
                )));
            }
            other => return Err(AppError::UnknownGroup(other.to_owned())),
        }
    }
    Ok(projections)
}

/// `flows redrive`: applies the parked commits of consumer group `group` (`order_saga`, also
/// spelt `saga`, `notifications` or `purchase_orders`), of one aggregate (type, id) or of every parked one,
/// oldest first, through the command API; each aggregate stops at its first commit that fails
/// again.
pub async fn redrive(
    settings: &Settings,
    group: &str,
    aggregate: Option<(&str, &str)>,
) -> Result<Vec<(String, String, RedriveOutcome)>, AppError> {
    let group = if group == "saga" { SAGA_NAME } else { group };
    let sdk = aws_support::sdk_config(&settings.aws).await;
    let clients = CommandClients::new(settings)?;
    let consumers = log_consumers(settings, &aws_support::sqs(&sdk), &clients, &[group])?;
    let Some(consumer) = consumers.first() else {
        return Err(AppError::UnknownGroup(group.to_owned()));
    };
    let parked = ParkedStore::new(aws_support::dynamodb(&sdk), &settings.dynamodb.parked_table);
    Ok(match aggregate {
        Some((kind, id)) => {
            let outcome = kinesis_consumer::redrive(consumer.as_ref(), &parked, kind, id).await?;
            vec![(kind.to_owned(), id.to_owned(), outcome)]
        }
        None => kinesis_consumer::redrive_all(consumer.as_ref(), &parked).await?,
    })
}

/// The flows process, built and bound, not yet running.
pub struct Application {
    worker: Option<Worker>,
    consumers: Vec<QueueConsumer>,
    dead_letter_queues: Vec<(&'static str, String)>,
    sqs: aws_sdk_sqs::Client,
    health: Arc<AllHealthy>,
    admin_listener: TcpListener,
}

impl Application {
    /// Builds every worker `flows.workers` names, with the sandbox gateway.
    pub async fn build(settings: &Settings) -> Result<Self, AppError> {
        let sandbox = SandboxGateway::new(Duration::from_millis(settings.payments.sandbox_slow_ms));
        Self::build_with_gateway(settings, Arc::new(sandbox)).await
    }

    /// Builds every worker `flows.workers` names, paying through `gateway`.
    pub async fn build_with_gateway(
        settings: &Settings,
        gateway: Arc<dyn PaymentGateway>,
    ) -> Result<Self, AppError> {
        let sdk = aws_support::sdk_config(&settings.aws).await;
        let sqs = aws_support::sqs(&sdk);
        let clients = CommandClients::new(settings)?;
        let groups: Vec<&str> = LOG_GROUPS
            .into_iter()
            .filter(|group| settings.runs(group))
            .collect();
        let projections = log_consumers(settings, &sqs, &clients, &groups)?;
        let worker = if projections.is_empty() {
            None
        } else {
            Some(Worker::new(&sdk, settings.worker_config()?, projections))
        };

        let mut consumers = Vec::new();
        let mut handlers: Vec<(&str, Arc<dyn MessageHandler>)> = Vec::new();
        if settings.runs(PAYMENTS) {
            handlers.push((
                PAYMENTS,
                Arc::new(PaymentProcessor::new(
                    gateway,
                    clients.client(),
                    Duration::from_millis(settings.payments.gateway_timeout_ms),
                    Duration::from_millis(settings.payments.charge_deadline_ms),
                )),
            ));
        }
        if settings.runs(INTAKE) {
            handlers.push((INTAKE, Arc::new(IntakeHandler::new(clients.client()))));
        }
        for (name, handler) in handlers {
            let queue = settings.queue(name)?;
            consumers.push(QueueConsumer::new(
                sqs.clone(),
                ConsumerConfig {
                    name: queue.name,
                    queue_url: queue.queue_url,
                    dead_letter_url: queue.dead_letter_url,
                    wait_time: Duration::from_secs(settings.sqs.wait_time_seconds),
                    visibility_timeout: Duration::from_secs(
                        settings.sqs.visibility_timeout_seconds,
                    ),
                    max_messages: settings.sqs.max_messages,
                    retry_initial: Duration::from_millis(settings.sqs.retry_initial_ms),
                    retry_max: Duration::from_millis(settings.sqs.retry_max_ms),
                },
                handler,
            ));
        }

        let mut dead_letter_queues = Vec::new();
        for name in [INTAKE, PAYMENTS, NOTIFICATIONS, PURCHASE_ORDERS] {
            if let Ok(queue) = settings.queue(name) {
                dead_letter_queues.push((queue.name, queue.dead_letter_url));
            }
        }
        let mut checks: Vec<Arc<dyn HealthCheck>> = Vec::new();
        if let Some(worker) = &worker {
            checks.push(worker.health());
        }
        for consumer in &consumers {
            checks.push(consumer.health());
        }
        let admin_listener = admin::bind(&settings.admin.host, settings.admin.port).await?;
        Ok(Self {
            worker,
            consumers,
            dead_letter_queues,
            sqs,
            health: Arc::new(AllHealthy(checks)),
            admin_listener,
        })
    }

    /// The same process with its log consumers reading only the events `vocabulary` knows: the
    /// flows of an older build, for the tests of rolling upgrades.
    pub fn with_vocabulary(mut self, vocabulary: Vocabulary) -> Self {
        self.worker = self.worker.map(|worker| worker.with_vocabulary(vocabulary));
        self
    }

    /// The bound admin address (the real port when the settings said 0).
    pub fn admin_address(&self) -> Result<SocketAddr, AppError> {
        self.admin_listener.local_addr().map_err(AppError::Admin)
    }

    /// Runs until `shutdown` completes, then stops gracefully: queue consumers finish the
    /// messages in hand, log consumers finish and checkpoint their batches and release their
    /// leases, and the admin endpoint stops last. Dropping the future instead is a crash, which
    /// every flow is built to survive.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let (stop, _) = watch::channel(false);
        let stopped = |stop: &watch::Sender<bool>| {
            let mut receiver = stop.subscribe();
            async move {
                let _ = receiver.wait_for(|stop| *stop).await;
            }
        };
        let admin = tokio::spawn(admin::serve(
            self.admin_listener,
            self.health.clone(),
            stopped(&stop),
        ));
        let depth = tokio::spawn(report_depths(self.sqs.clone(), self.dead_letter_queues));
        let mut running: Vec<Pin<Box<dyn Future<Output = ()> + Send>>> = Vec::new();
        if let Some(worker) = self.worker {
            running.push(Box::pin(worker.run(stopped(&stop))));
        }
        for consumer in self.consumers {
            running.push(Box::pin(consumer.run(stopped(&stop))));
        }
        let all = join_all(running);
        tokio::pin!(all);
        tokio::select! {
            _ = &mut all => {}
            () = shutdown => {
                let _ = stop.send(true);
                all.await;
            }
        }
        let _ = stop.send(true);
        depth.abort();
        match admin.await {
            Ok(result) => result.map_err(AppError::Admin),
            Err(join) => Err(AppError::Admin(std::io::Error::other(join))),
        }
    }
}

/// Healthy when every part is.
struct AllHealthy(Vec<Arc<dyn HealthCheck>>);

impl HealthCheck for AllHealthy {
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let problems: Vec<String> = join_all(self.0.iter().map(|check| check.check()))
                .await
                .into_iter()
                .filter_map(Result::err)
                .collect();
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            }
        })
    }
}

/// Publishes `orderpipe_flows_dlq_depth{queue}`: the messages waiting in each dead-letter queue.
async fn report_depths(sqs: aws_sdk_sqs::Client, queues: Vec<(&'static str, String)>) {
    let queues: Vec<(&str, SqsQueue)> = queues
        .into_iter()
        .map(|(name, url)| (name, SqsQueue::new(sqs.clone(), url)))
        .collect();
    loop {
        for (name, queue) in &queues {
            let depth = queue
                .attribute(QueueAttributeName::ApproximateNumberOfMessages)
                .await;
            match depth {
                Ok(depth) => {
                    let count = depth.and_then(|n| n.parse::<f64>().ok()).unwrap_or(0.0);
                    metrics::gauge!("orderpipe_flows_dlq_depth", "queue" => *name).set(count);
                }
                Err(error) => {
                    tracing::warn!(queue = name, error = %error_chain(&error), "cannot read dead-letter queue depth")
                }
            }
        }
        tokio::time::sleep(DEPTH_INTERVAL).await;
    }
}
