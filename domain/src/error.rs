//! The error vocabulary shared by every aggregate.
//!
//! Each aggregate has its own error enum; all of them classify themselves with [`ErrorKind`] so
//! the gRPC layer can map kinds to status codes in one place.

use std::borrow::Cow;

/// What kind of failure an error is, independent of the aggregate that raised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or breaks a rule regardless of current state.
    InvalidArgument,
    /// The request is well formed but the current state does not allow it.
    FailedPrecondition,
    /// The aggregate (or an entity inside it) does not exist.
    NotFound,
    /// The actor may not do this to this aggregate.
    PermissionDenied,
    /// A dependency needed to decide is down; retrying later may succeed.
    Unavailable,
}

/// A value that failed to parse into a value object, naming the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The request field at fault, e.g. `sku` or, after [`ValidationError::at`], `lines[2].sku`.
    pub field: Cow<'static, str>,
    /// Why the value was refused, as a sentence a client developer can act on.
    pub message: String,
}

impl ValidationError {
    /// An error for `field` explained by `message`.
    pub fn new(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error reported at another field path: a value object knows only its own name,
    /// the caller knows where in the request it sat.
    #[must_use]
    pub fn at(self, field: impl Into<Cow<'static, str>>) -> Self {
        Self {
            field: field.into(),
            ..self
        }
    }

    /// Always [`ErrorKind::InvalidArgument`].
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

/// An aggregate's error: a business rule's refusal that knows its [`ErrorKind`].
pub trait DomainError: std::error::Error + Send + Sync + 'static {
    /// How the API should report it.
    fn kind(&self) -> ErrorKind;
}

/// Implements [`DomainError`] for error enums that classify themselves with an inherent `kind()`.
macro_rules! domain_errors {
    ($($error:ty),+ $(,)?) => {
        $(impl DomainError for $error {
            fn kind(&self) -> ErrorKind {
                <$error>::kind(self)
            }
        })+
    };
}

domain_errors!(
    crate::order::OrderError,
    crate::inventory::InventoryError,
    crate::loyalty::LoyaltyError,
    crate::menu::MenuError,
);
