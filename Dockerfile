# The production image: one image for web, worker, beat and flower (docker-compose.yml picks
# the command). It installs mailer itself, not its development tools: the templates and
# migrations travel inside the package (pyproject.toml, force-include).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN useradd --create-home --uid 10001 mailer
COPY pyproject.toml README.md ./
COPY src ./src
COPY workers ./workers
COPY templates ./templates
COPY migrations ./migrations
RUN pip install --upgrade pip && pip install '.[flower]' && mkdir -p /app/var && chown mailer /app/var
USER mailer
EXPOSE 8000
# FORWARDED_ALLOW_IPS names the proxy whose X-Forwarded-* headers --proxy-headers believes.
CMD ["uvicorn", "--factory", "mailer.web.app:create_app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
