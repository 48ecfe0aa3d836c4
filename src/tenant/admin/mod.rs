//! The staff's admin screens (`/admin/…`): the form builder and, for
//! administrators, staff and departments.

pub mod access;
pub mod forms;

use super::staff::StaffUser;

/// The admin header: who is signed in, the CSRF token for sign-out, the current section.
pub struct Nav {
    pub email: String,
    pub role: &'static str,
    pub csrf: String,
    pub is_admin: bool,
    /// Administrators and 所属管理者: the staff screen.
    pub manages_staff: bool,
    pub section: &'static str,
}

impl Nav {
    pub fn new(user: &StaffUser, section: &'static str) -> Self {
        Self {
            email: user.email.clone(),
            role: user.role.label(),
            csrf: user.csrf.clone(),
            is_admin: user.is_admin(),
            manages_staff: user.manages_staff(),
            section,
        }
    }
}
