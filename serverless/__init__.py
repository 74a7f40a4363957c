"""The serverless side of minik8s: code upload and image builder, the HTTP trigger gateway, activator, autoscaler."""
