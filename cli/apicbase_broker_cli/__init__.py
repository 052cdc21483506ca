"""Command line for the Apicbase OAuth Broker's admin API (console script ``apicbase-broker``)."""
