"""admin-config: the admin API (certificate authorities, configuration profiles, activities)."""
