//! Forms: the definition format, answer checking, and (in submodules) the
//! builder's storage and the citizen's pages.

pub mod answers;
pub mod attachments;
pub mod citizen;
pub mod definition;
pub mod kept;
pub mod places;
pub mod pow;
pub mod proxy;
pub mod resume;
pub mod store;
pub mod verify;
pub mod view;
