"""Lightning modules: one base (optimizer, scheduler, seeding, checkpoint metadata) and one per task."""
