# One image for the web app, the workers and beat (docker-compose.yml picks the command).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md worker.py ./
COPY mailer ./mailer
COPY subscribers ./subscribers
COPY templates ./templates
COPY examples ./examples
RUN pip install --no-cache-dir -e .
CMD ["newsletter", "web", "--host", "0.0.0.0", "--port", "8000"]
