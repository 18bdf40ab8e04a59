# nabij: one image, any service. The command picks it: `proximity`, `gateway`, `console`,
# `simulate ...` (docs/deploy.md). Config is mounted at /etc/nabij, secrets as files (compose
# secrets or a volume), never in the image or its environment.
#
# tests/deploy/test_dockerfile.py runs the RUN, ENTRYPOINT, CMD and HEALTHCHECK lines below in a
# clean virtual environment, since no container engine runs on the development machines: keep
# each step a plain shell command that works there too.

# --- build: every dependency as a wheel, nabij's own included --------------------------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY nabij nabij
COPY services services
COPY simulators simulators
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

# --- run: wheels only, no compiler, no demo parts, not root -----------------------------------
FROM python:3.11-slim
RUN useradd --system --no-create-home --uid 10001 --user-group nabij
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index --find-links /wheels /wheels/nabij-*.whl && rm -rf /wheels
USER 10001:10001
ENV NABIJ_CONFIG=/etc/nabij PYTHONUNBUFFERED=1
EXPOSE 9100
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s CMD ["nabij", "healthcheck", "--port", "9100"]
ENTRYPOINT ["nabij"]
CMD ["run", "--metrics-port", "9100"]
