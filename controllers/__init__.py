"""The controller-manager: level-triggered reconcilers (Endpoints, ReplicaSet, Deployment, garbage
collector) over keyed work queues and shared informers. See ``controllers/README.md``."""
