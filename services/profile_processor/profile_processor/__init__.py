"""profile-processor: reconciles who should have which profile, renders and queues them."""
