//! The image catalogue: the packages the machine knows, by id, kind,
//! title and version, and which updates use them.

use super::*;

impl Ota {
    /// Puts back a stored image at start.
    pub fn restore_image(&mut self, image: Image) {
        self.images.insert(image.id.clone(), image);
    }

    /// An image whose file is now in the store. The same bytes added
    /// again under the same title and version are the same image.
    pub fn add_image(&mut self, image: Image) -> Result<Image, OtaError> {
        if let Some(old) = self.images.get(&image.id) {
            if (old.kind, &old.title, &old.version) == (image.kind, &image.title, &image.version) {
                return Ok(old.clone());
            }
            return Err(OtaError::Busy(format!(
                "the same bytes are already image {} ({} {} {})",
                old.id,
                old.kind.name(),
                old.title,
                old.version
            )));
        }
        log::info!(
            "OTA image {} added: {} {} {} ({} bytes)",
            image.id,
            image.kind.name(),
            image.title,
            image.version,
            image.size
        );
        self.images.insert(image.id.clone(), image.clone());
        self.events.push_back(OtaEvent::ImageAdded(image.clone()));
        Ok(image)
    }

    /// Removes an image, unless an update still sends it.
    pub fn remove_image(&mut self, id: &str) -> Result<Image, OtaError> {
        let id = self.resolve(id)?.id.clone();
        if let Some(u) = self
            .updates
            .values()
            .find(|u| !u.rec.phase.is_final() && u.rec.image.id == id)
        {
            return Err(OtaError::Busy(format!(
                "image {id} is in use by the update of {} ({}); cancel it first",
                u.rec.endpoint,
                u.rec.phase.name()
            )));
        }
        let img = self.images.remove(&id).expect("resolved");
        self.events.push_back(OtaEvent::ImageRemoved(id));
        Ok(img)
    }

    /// An image by id, or by a unique prefix of it (as `git` takes hashes).
    pub fn resolve(&self, id: &str) -> Result<&Image, OtaError> {
        let id = id.trim().to_ascii_lowercase();
        if id.len() < 4 {
            return Err(OtaError::BadInput(format!(
                "image id {id:?}: give at least 4 hex digits"
            )));
        }
        let mut hits = self
            .images
            .range(id.clone()..)
            .take_while(|(k, _)| k.starts_with(&id));
        match (hits.next(), hits.next()) {
            (Some((_, img)), None) => Ok(img),
            (Some(_), Some(_)) => Err(OtaError::BadInput(format!(
                "image id {id:?} names more than one image; give more digits"
            ))),
            _ => Err(OtaError::NotFound(format!("no image {id:?} in the store"))),
        }
    }

    /// The image with this title and version, for a start from the platform.
    pub fn find_image(&self, kind: Kind, title: &str, version: &str) -> Option<&Image> {
        self.images
            .values()
            .find(|i| i.kind == kind && i.title == title && i.version == version)
    }

    /// Every image, oldest first.
    pub fn images(&self) -> Vec<&Image> {
        let mut v: Vec<&Image> = self.images.values().collect();
        v.sort_by_key(|i| (i.added_ms, i.id.clone()));
        v
    }

    /// Bytes the images take.
    pub fn image_bytes(&self) -> u64 {
        self.images.values().map(|i| i.size).sum()
    }

    /// Whether a running or queued update sends `image`.
    pub fn uses_image(&self, image: &str) -> bool {
        self.updates
            .values()
            .any(|u| !u.rec.phase.is_final() && u.rec.image.id == image)
    }
}
