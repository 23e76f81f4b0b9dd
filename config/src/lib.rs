//! Herald's shared configuration: the API types (CRDs), address parsing, and the pure rules for
//! which pool a Service may use. No I/O lives here.

pub mod addresses;
pub mod announcement;
pub mod l2advertisement;
pub mod lease;
pub mod node;
pub mod pod;
pub mod pool;
pub mod selection;
pub mod service;

pub use addresses::{AddressError, Family, IpRange};
pub use announcement::{L2Announcements, NodeL2Status};
pub use l2advertisement::{L2Advertisement, L2AdvertisementSpec};
pub use pool::{IPAddressPool, IPAddressPoolSpec, IPAddressPoolStatus, ServiceAllocation};
pub use selection::{Labels, PoolPolicy};
pub use service::{ServiceKey, ServiceRequest};

/// The API group of Herald's custom resources.
pub const GROUP: &str = "herald.dev";
