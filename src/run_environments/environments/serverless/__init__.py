"""Serverless environments: the executor function (:mod:`.executor`), and the environments
that invoke it on AWS Lambda (:mod:`.aws_lambda`) and Google Cloud Functions (:mod:`.gcf`);
:mod:`.deploy` packages and deploys it."""
