//! Runner images: present, else pull, else build locally from Debian packages (`images/`).
