//! Dense per-snapshot indexes. Ids are only meaningful with the snapshot that made them.

macro_rules! id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u16);
        impl $name {
            /// Position in the snapshot's table.
            pub fn index(self) -> usize {
                usize::from(self.0)
            }
        }
    };
}

id!(
    /// A unit of one snapshot.
    UnitId
);
id!(
    /// A service name of one snapshot.
    ServiceId
);
id!(
    /// A region of one snapshot.
    RegionId
);
id!(
    /// A datacenter of one snapshot.
    DcId
);
id!(
    /// A route of one snapshot.
    RouteId
);
