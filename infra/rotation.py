"""The order of an `app_user` password rotation, the same on AWS and on the local target.

Alternating users (AWS Secrets Manager's "alternating users" strategy, "Lambda function rotation
strategies"): `app_user` and `app_user_clone` both log in; a rotation changes the password of the
one the functions' secret does not name. Each step below only ever changes something nobody is
using yet, so no login fails at any point:

1. the inactive user gets its new password (`ALTER ROLE ... PASSWORD <verifier>`): no client holds
   its credentials (the secret has named the other user since the last rotation);
2. the pooler learns the inactive user's new verifier (PgBouncer's auth file: on AWS the verifier
   secret's new version and the ECS rollout it triggers, which must complete; locally a reload),
   and one login per process confirms it: still nobody but this check uses that user;
3. only then the functions' secret names the inactive user with its new password: functions that
   fetch it now log in as that user, which the database and every pooler process accept; functions
   still holding the previous credentials go on logging in as the other user, unchanged.

On AWS these are two `pulumi up` runs (README, "Rotating app_user's password"): `--replace` of the
standby login's RandomPassword (steps 1 and 2: the bootstrap sets it, the PgBouncer service rolls
and Pulumi waits for it to be steady), then `app_user.current_login` switched (step 3: only the two
login secrets swap contents; the tasks do not roll).

The precondition: a function re-reads the secret (a cold start, or a refresh) at least once between
two rotations, or its next login after the second one fails once and is retried with the new
secret (the connection helper refreshes on 28P01).
"""

from __future__ import annotations

ROTATION_STEPS: tuple[str, ...] = (
    "set the inactive user's new password in the database",
    "give the pooler the inactive user's new verifier and wait until every process accepts it",
    "point the functions' secret at the inactive user and its new password",
)

CLONE_SUFFIX = "_clone"


def clone_name(user: str) -> str:
    """The second login's name, as AWS's alternating-users rotation names it
    (functions/rotation.py holds the same rule for the deployed code)."""
    return f"{user}{CLONE_SUFFIX}"
