from django.contrib.auth.hashers import PBKDF2PasswordHasher


class FastPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """PBKDF2 with few iterations.

    DOT checks the hashed client secret on every token and introspection request; with
    Django's default 1.5 million iterations that costs about half a second each. The
    sandbox guards nothing real, so speed wins. Same algorithm name, so hashes stay
    readable by the default hasher.
    """

    iterations = 1000
