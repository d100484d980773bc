"""Drop-in layer APIs of related projects on rstfast's layers and backends.

* :mod:`rstfast.compat.sesn`: SESN (Sosnovik et al., ICLR 2020) — swap the import of SESN's
  ``models.impl.ses_conv`` for ``rstfast.compat.sesn`` (docs/sesn_compat.md).
"""
